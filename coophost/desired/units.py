"""The desired state of a co-op: members summarised, units hashed, placed, hosts hashed.

The pipeline `plan`, `render` and (later) `deploy` share: registry -> units -> placement ->
per-host hashes. Each member file is reduced to a small summary (its units' hashes and costs,
what it claims co-op-wide, where its units are recorded) kept in the parse cache, so a warm
plan re-reads only the files that changed and re-checks the co-op from summaries.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any, TypeGuard

from coophost.backup.model import unit_paths
from coophost.backup.render import backup_hash_input
from coophost.desired.render import (
    host_hash,
    host_level_hash,
    host_vars,
    template_digest,
    unit_hash,
    unit_shape,
    unit_vars,
)
from coophost.dns.serve import dns_hash_input
from coophost.errors import EnvironmentProblem
from coophost.layout import HOOKS_FILE, SERVICE_FILE, STATE_DIR, roles_paths
from coophost.registry.cache import ParseCache
from coophost.registry.catalogue import Catalogue
from coophost.registry.loader import (
    Base,
    Loaded,
    MemberFiles,
    load_base,
    load_registry,
    scan_members,
)
from coophost.registry.model import ARTIFACTS_GROUP, Coop, Host, Member
from coophost.registry.parse import (
    ReservedNames,
    check_claims,
    check_placement,
    claims,
    fallback_addresses,
)
from coophost.registry.placement import Demand, Placement, place

SUMMARY_CACHE = "cache/summaries.marshal"
PLACED = "placed"  # the summary cache's derived data: units placed and hashed, host hashes
SUMMARY_LAYOUT = "5"  # bump when summarise() returns something else
CLAIM_SEP = "\0"  # between the co-op-wide names a member claims, in its summary
ROLE_SKIP_DIRS = frozenset({"molecule", "tests", "__pycache__"})
# In a service folder, coophost's own files: the catalogue entry (its digest enters every
# unit's hash on its own) and the hooks (they decide, they are not applied); in any role, its
# README (prose: a documentation change must not redeploy every host of the role).
ROLE_SKIP_FILES = frozenset({SERVICE_FILE, HOOKS_FILE, "README.md"})


def roles_dirs() -> list[Path]:
    """Return where the project's roles live (roles/, then services/), as Ansible's roles_path."""
    try:
        candidates = roles_paths()
    except EnvironmentProblem:
        return []
    return [candidate for candidate in candidates if candidate.is_dir()]


def role_dir(role: str) -> Path | None:
    """The folder of role `role`: the first one on the roles path, as Ansible finds it.

    A service folder without tasks or meta (a coming service: its coophost.yml and README
    only) is no role.
    """
    for base in roles_dirs():
        folder = base / role
        if (folder / "tasks" / "main.yml").is_file() or (folder / "meta" / "main.yml").is_file():
            return folder
    return None


@cache
def role_version(role: str) -> str:
    """Return a content hash of a role's files (tests excluded): what it applies, as a version."""
    path = role_dir(role)
    if path is None:
        return "absent"
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in ROLE_SKIP_DIRS)
        for name in sorted(files):
            if Path(folder) == path and name in ROLE_SKIP_FILES:
                continue
            file = Path(folder) / name
            digest.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


UNIT_TASKS = "units.yml"  # a service role's per-unit tasks, which the deploy's fast path runs


def fast_capable(catalogue: Catalogue) -> set[str]:
    """The services whose role has per-unit tasks (tasks/units.yml) the fast path can run.

    Available services only: a coming one's role (being built) is in no playbook, and no member
    can have it.
    """
    found = set()
    for name, service in catalogue.services.items():
        if not service.available:
            continue
        folder = role_dir(service.role)
        if folder is not None and (folder / "tasks" / UNIT_TASKS).is_file():
            found.add(name)
    return found


def role_versions(catalogue: Catalogue) -> dict[str, str]:
    """Return the role version of every service."""
    return {name: role_version(service.role) for name, service in catalogue.services.items()}


@dataclass(slots=True)
class UnitState:
    """One placed unit of the desired state."""

    member: str
    service: str
    host: str
    hash: str
    new: bool


# One placed unit as plain data: (member, service, host, hash, newly placed).
UnitRow = tuple[str, str, str, str, bool]


@dataclass
class Desired:
    """The whole desired state: every placed unit, each host's usage and hash.

    `rows` hold the units in placement order; `units` and `placement` are views of them built
    on first use (a plan with nothing changed only needs `unit_hashes()`).
    """

    coop: Coop
    hosts: dict[str, Host]
    catalogue: Catalogue
    rows: list[UnitRow]
    usage: dict[str, dict[str, int]]
    host_hashes: dict[str, str]
    role_versions: dict[str, str]
    # Each host's host-level hash (render.host_level_hash): what the deploy's fast path needs
    # unchanged since the last apply.
    host_levels: dict[str, str]
    # What the co-op's artifact mirror serves (coophost.artifacts.serve): rendered into the
    # vars of the hosts of group artifacts, and part of their hashes.
    mirror: list[dict[str, str]] = field(default_factory=list)

    @cached_property
    def units(self) -> dict[tuple[str, str], UnitState]:
        """Every unit by (member, service)."""
        return {(member, service): UnitState(member, service, host, digest, new)
                for member, service, host, digest, new in self.rows}

    @cached_property
    def placement(self) -> Placement:
        """The placement: a host per unit, the newly placed units, each host's usage."""
        return Placement(hosts={(m, s): host for m, s, host, _, _ in self.rows},
                         new={(m, s) for m, s, _, _, new in self.rows if new},
                         usage=self.usage)

    def unit_hashes(self) -> dict[tuple[str, str, str], str]:
        """Every unit's hash by (host, member, service): what the plan compares."""
        return {(host, member, service): digest for member, service, host, digest, _ in self.rows}


def summarise(member: Member, catalogue: Catalogue, versions: dict[str, str]) -> list[Any]:
    """Return the plain summary of a member that the plan needs (cached per file)."""
    units = {}
    for service_name, settings in member.services.items():
        service = catalogue.services[service_name]
        cost = service.unit_cost(settings)
        variables = unit_vars(member, service)
        paths = unit_paths(service, member.owner, member.slug, [d.ascii for d in member.domains])
        units[service_name] = (unit_hash(variables, service, versions[service_name]),
                               cost["ram_mb"], cost["disk_gb"],
                               unit_shape(variables, service, paths))
    keys = [key for key, _, _ in claims(member, catalogue)]
    if any(CLAIM_SEP in key for key in keys):  # validated names never hold one
        raise ValueError(f"{member.file}: a claimed name holds a NUL character")
    moved = {name: record["from"] for name, record in member.moved.items()}
    return [member.slug, member.file, CLAIM_SEP.join(keys), units, dict(member.placement),
            moved]


def _check_claims(base: Base, summaries: list[Any]) -> None:
    """Refuse a domain, vhost or address claimed twice, or a name inside another member's.

    The error names the later claim.
    """
    claimed: set[str] = set()
    count = 0
    names: dict[str, str] = {}  # domain and vhost claims (no address, no SSH key) -> slug
    for slug, _, keys, _, _, _ in summaries:
        mine = set(keys.split(CLAIM_SEP)) if keys else set()
        count += len(mine)
        claimed |= mine
        names.update((key, slug) for key in mine if "@" not in key and ":" not in key)
    if any(names.get(key.split(".", start)[-1], slug) != slug
           for key, slug in names.items() for start in range(1, key.count("."))):
        load_registry(base.root)  # cross_check names the nested domain (check_nested_domains)
    if len(claimed) == count:  # every name claimed by one member at most
        return
    owners: dict[str, str] = {}
    for slug, _, keys, _, _, _ in summaries:
        for key in keys.split(CLAIM_SEP) if keys else ():
            if owners.setdefault(key, slug) != slug:
                # Summaries keep only keys; re-read the two records for a precise message.
                both = [m for m in load_registry(base.root).registry.members.values()
                        if m.slug in (owners[key], slug)]
                check_claims((m.slug, m.file, claims(m, base.catalogue)) for m in both)


def _check_reserved(base: Base, summaries: list[Any]) -> None:
    """Refuse a domain or vhost that is a host's (or the co-op's, or the lab's) name."""
    reserved = ReservedNames(base.coop, base.hosts)
    for slug, _, keys, units, _, _ in summaries:
        fallbacks = fallback_addresses(slug, units, base.catalogue, base.coop)
        for key in keys.split(CLAIM_SEP) if keys else ():
            if "@" not in key and not key.startswith("ssh:") \
                    and reserved.problem(key, fallbacks) is not None:
                load_registry(base.root)  # checks every record and names the file and field
                return


def check_names(desired: Desired, root: Path, *, members: Iterable[str] = (),
                hosts: Iterable[str] = (), services: Iterable[str] = ()) -> None:
    """Refuse (exit 2, with a did-you-mean) a member, host or service name that does not exist.

    For the filters of `plan` and `deploy`: a misspelt name must not select nothing and pass.
    """
    from coophost.registry import checks

    known_members = sorted({row[0] for row in desired.rows}
                           | {name[:-4] for name in MemberFiles(root).names})
    for error, given, known in ((checks.no_member, members, known_members),
                                (checks.no_host, hosts, sorted(desired.hosts)),
                                (checks.no_service, services, sorted(desired.catalogue.services))):
        for name in given:
            if name not in known:
                raise error(name, known)


def compute(source: Path | Loaded, *, use_cache: bool = True) -> Desired:
    """Compute the desired state of a co-op (reads only; the cache aside).

    `source` is the co-op directory, or the co-op a command loaded already: then coop.yml
    and hosts.yml are not read again, and a member file whose summary is not cached is
    summarised from the loaded record when it still holds the bytes that record came from.

    Placement and host hashes are kept in the summary cache as derived data, under a key of
    hosts.yml and the vars template; the cache drops them whenever a member file changes
    (the role versions, coop.yml and catalogue are in its fingerprint). So a plan with
    nothing changed checks every file's stat and reuses them, and any change recomputes them
    from every summary.
    """
    if isinstance(source, Loaded):
        root, known = source.root, source.known()
        base = source.base if source.base is not None and source.base.hosts else load_base(root)
    else:
        root, known = source, {}
        base = load_base(root)
    catalogue = base.catalogue
    versions = role_versions(catalogue)
    salt = (f"summaries {SUMMARY_LAYOUT}\0" + repr(sorted(versions.items()))
            + f"\0backup {role_version('backup')}\0dns {role_version('dns')}"
            + f"\0artifacts {role_version('artifacts')}"
            + f"\0code {code_digest()}")
    summary_cache = ParseCache(root / STATE_DIR / SUMMARY_CACHE if use_cache else None,
                               base.fingerprint(salt))
    mirror = mirror_items(base)
    key = hashlib.sha256(f"{base.hosts_digest}\0{template_digest()}\0{json.dumps(mirror)}"
                         .encode()).hexdigest()
    files = MemberFiles(root)
    cached = summary_cache.get_derived(PLACED, key) if files.unchanged_in(summary_cache) else None
    placed = cached if _is_placed(cached) else _scan_and_place(base, summary_cache, files, key,
                                                                versions, known, mirror)
    rows, usage, host_hashes, host_levels = placed
    return Desired(coop=base.coop, hosts=base.hosts, catalogue=catalogue, rows=rows,
                   usage=usage, host_hashes=host_hashes, role_versions=versions,
                   host_levels=host_levels, mirror=mirror)


# The modules whose code shapes summaries, placements and hashes: a coophost upgrade that
# changes one of them must not reuse what an older version cached.
HASH_SHAPING = ("registry/model.py", "registry/parse.py", "registry/catalogue.py",
                "registry/placement.py", "desired/render.py", "desired/units.py", "dns/serve.py",
                "backup/model.py", "artifacts/serve.py")


@cache
def code_digest() -> str:
    """SHA-256 over the source of the modules in HASH_SHAPING (read once per process)."""
    package = Path(__file__).resolve().parents[1]
    found = hashlib.sha256()
    for name in HASH_SHAPING:
        found.update(name.encode() + b"\0" + (package / name).read_bytes())
    return found.hexdigest()


def _is_placed(value: object) -> TypeGuard[list[Any]]:
    """Whether `value` has the shape of cached placement data.

    [rows, usage, host hashes, host-level hashes].
    """
    return (isinstance(value, list) and len(value) == 4 and isinstance(value[0], list)
            and isinstance(value[1], dict) and isinstance(value[2], dict)
            and isinstance(value[3], dict))


def mirror_items(base: Base) -> list[dict[str, str]]:
    """What the co-op's artifact mirror serves (coophost.artifacts.serve), when it has one."""
    from coophost.artifacts.serve import served

    if not any(ARTIFACTS_GROUP in host.groups for host in base.hosts.values()):
        return []
    return served(base.root)


def _scan_and_place(base: Base, cache: ParseCache, files: MemberFiles, key: str,
                    versions: dict[str, str],
                    known: dict[str, tuple[bytes, Member]],
                    mirror: list[dict[str, str]]) -> list[Any]:
    """Re-read the member files that changed, then place and hash (saving the cache).

    The derived placement survives the scan when no record changed (a file was only verified
    by content, its mtime having moved or being racy); otherwise it is computed again.
    """
    summaries = scan_members(base, cache,
                             lambda member: summarise(member, base.catalogue, versions), files,
                             known)
    placed = cache.get_derived(PLACED, key)
    if not _is_placed(placed):
        placed = None
    if placed is None and cache.dirty:  # a clean cache was saved only after this check passed
        _check_claims(base, summaries)
    if placed is None:  # hosts.yml may have changed: its names are reserved
        _check_reserved(base, summaries)
    try:
        if placed is None:
            placed = list(_place_and_hash(base, summaries, versions, mirror))
            cache.set_derived(PLACED, key, placed)
    finally:  # the summaries are valid even when no host fits a new unit
        cache.save()
    return placed


def relays_by_host(moves: Iterable[tuple[str, dict[str, str]]],
                   placed: Mapping[tuple[str, str], str], digests: Mapping[tuple[str, str], str],
                   hosts: Mapping[str, Any]) -> dict[str, list[list[str]]]:
    """What each host relays for units that moved away from it: [member, service, to, digest].

    A record naming a host that is gone, or the unit's own host, relays nothing.
    """
    relays: dict[str, list[list[str]]] = {}
    for slug, moved in moves:
        for service, old in sorted(moved.items()):
            new = placed.get((slug, service))
            if new is None or old == new or old not in hosts:
                continue
            relays.setdefault(old, []).append([slug, service, new, digests[(slug, service)]])
    return {host: sorted(rows) for host, rows in relays.items()}


def _place_and_hash(base: Base, summaries: list[Any], versions: dict[str, str],
                    mirror: list[dict[str, str]] | None = None
                    ) -> tuple[list[UnitRow], dict[str, dict[str, int]], dict[str, str],
                               dict[str, str]]:
    """Check recorded placements, place every unit, and hash every host (twice: whole, level)."""
    catalogue = base.catalogue
    group_of = {name: service.group for name, service in catalogue.services.items()}
    # (service, host) pairs a placement may name; any other is reported by check_placement.
    allowed = {(name, host.name) for host in base.hosts.values()
               for name, group in group_of.items() if group in host.groups}
    costs: dict[tuple[int, int], dict[str, int]] = {}  # one mapping per distinct cost
    demands = []
    hashes: dict[tuple[str, str], str] = {}
    shapes: dict[tuple[str, str], str] = {}
    for slug, file, _, units, placement, _moved in summaries:
        if not all(pair in allowed for pair in placement.items()):
            check_placement(file, placement, base.hosts, catalogue)
        for service_name, (digest, ram, disk, shape) in units.items():
            hashes[(slug, service_name)] = digest
            shapes[(slug, service_name)] = shape
            cost = costs.get((ram, disk))
            if cost is None:
                cost = costs[(ram, disk)] = {"ram_mb": ram, "disk_gb": disk}
            demands.append(Demand(slug, service_name, group_of[service_name], cost,
                                  placement.get(service_name)))
    groups: dict[str, list[str]] = {}
    for host in base.hosts.values():
        for group in host.groups:
            groups.setdefault(group, []).append(host.name)
    placed = place(demands, {h.name: h.capacity for h in base.hosts.values()}, groups)
    new = placed.new
    rows = [(member, service, where, hashes[(member, service)], (member, service) in new)
            for (member, service), where in placed.hosts.items()]
    on_host: dict[str, list[tuple[str, str, str]]] = {h: [] for h in base.hosts}
    for member, service, where, digest, _ in rows:
        on_host[where].append((member, service, digest))
    relays = relays_by_host(((slug, moved) for slug, _, _, _, _, moved in summaries),
                            placed.hosts, hashes, base.hosts)
    host_hashes = {}
    host_levels = {}
    has_units = {name: bool(units) for name, units in on_host.items()}
    backup_role = role_version("backup")
    dns_role = role_version("dns")
    artifacts_role = role_version("artifacts")
    members_role = role_version("members")  # the fast path runs it as it is
    for name, host in base.hosts.items():
        services = sorted({s for _, s, _ in on_host[name]})
        own = {**host_vars(host, base.coop), "inventory_vars": host.vars_digest,
               "groups": sorted(host.groups)}  # a group decides ports and certificates
        backup = backup_hash_input(host, base.hosts, has_units, backup_role)
        if backup:
            own["backup"] = backup
        if relays.get(name):
            own["relays"] = relays[name]
        dns = dns_hash_input(host, base.coop, dns_role)
        if dns:
            own["dns"] = dns
        if ARTIFACTS_GROUP in host.groups:  # the mirror: what it serves, and how
            own["artifacts"] = {"items": mirror or [], "role": artifacts_role}
        host_hashes[name] = host_hash(own, on_host[name],
                                      {s: versions[s] for s in services})
        host_levels[name] = host_level_hash(
            {**own, "members_role": members_role},
            [(m, s, shapes[(m, s)]) for m, s, _ in on_host[name]],
            {s: f"{versions[s]} {catalogue.services[s].digest}" for s in services})
    return rows, placed.usage, host_hashes, host_levels
