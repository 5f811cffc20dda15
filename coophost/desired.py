"""The desired state of a co-op: members summarised, units hashed, placed, hosts hashed.

The pipeline `plan`, `render` and (later) `deploy` share: registry -> units -> placement ->
per-host hashes. Each member file is reduced to a small summary (its units' hashes and costs,
what it claims co-op-wide, where its units are recorded) kept in the parse cache, so a warm
plan re-reads only the files that changed and re-checks the co-op from summaries.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from coophost.catalogue import Catalogue
from coophost.placement import Demand, Placement, place
from coophost.registry.cache import ParseCache
from coophost.registry.loader import Base, load_base, load_registry, scan_members
from coophost.registry.model import STATE_DIR, Coop, Host, Member
from coophost.registry.parse import check_claims, check_placement, claims
from coophost.render import host_hash, host_vars, unit_hash, unit_vars

SUMMARY_CACHE = "cache/summaries.marshal"
ROLE_SKIP_DIRS = frozenset({"molecule", "tests", "__pycache__"})


def roles_dir() -> Path | None:
    """Return where the project's roles live: beside the package, or shipped inside it."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "roles", here / "content" / "roles"):
        if candidate.is_dir():
            return candidate
    return None


@cache
def role_version(role: str) -> str:
    """Return a content hash of a role's files (tests excluded): what it applies, as a version."""
    base = roles_dir()
    path = base / role if base else None
    if path is None or not path.is_dir():
        return "absent"
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in ROLE_SKIP_DIRS)
        for name in sorted(files):
            file = Path(folder) / name
            digest.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


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


@dataclass
class Desired:
    """The whole desired state: units by (member, service), and each host's hash."""

    coop: Coop
    hosts: dict[str, Host]
    catalogue: Catalogue
    placement: Placement
    units: dict[tuple[str, str], UnitState]
    host_hashes: dict[str, str]
    role_versions: dict[str, str]


def summarise(member: Member, catalogue: Catalogue, versions: dict[str, str]) -> list[Any]:
    """Return the plain summary of a member that the plan needs (cached per file)."""
    units = {}
    for service_name, settings in member.services.items():
        service = catalogue.services[service_name]
        cost = service.unit_cost(settings)
        units[service_name] = (unit_hash(unit_vars(member, service), service,
                                         versions[service_name]),
                               cost["ram_mb"], cost["disk_gb"])
    return [member.slug, member.file, [key for key, _, _ in claims(member)], units,
            dict(member.placement)]


def _check_claims(base: Base, summaries: list[Any]) -> None:
    """Refuse a domain, vhost or address claimed twice; the error names the later claim."""
    owners: dict[str, str] = {}
    for slug, _, keys, _, _ in summaries:
        for key in keys:
            if owners.setdefault(key, slug) != slug:
                # Summaries keep only keys; re-read the two records for a precise message.
                both = [m for m in load_registry(base.root).registry.members.values()
                        if m.slug in (owners[key], slug)]
                check_claims((m.slug, m.file, claims(m)) for m in both)


def compute(root: Path, *, use_cache: bool = True) -> Desired:
    """Load the co-op at `root` and compute its desired state (reads only; the cache aside)."""
    base = load_base(root)
    catalogue = base.catalogue
    versions = role_versions(catalogue)
    salt = "summaries\0" + repr(sorted(versions.items()))
    summary_cache = ParseCache(root / STATE_DIR / SUMMARY_CACHE if use_cache else None,
                               base.fingerprint(salt))
    summaries = scan_members(base, summary_cache,
                             lambda member: summarise(member, catalogue, versions))
    if summary_cache.dirty:  # a clean cache was saved only after these checks passed
        _check_claims(base, summaries)
    demands = []
    hashes: dict[tuple[str, str], str] = {}
    for slug, file, _, units, placement in summaries:
        check_placement(file, placement, base.hosts, catalogue)
        for service_name, (digest, ram, disk) in units.items():
            hashes[(slug, service_name)] = digest
            demands.append(Demand(slug, service_name, catalogue.services[service_name].group,
                                  {"ram_mb": ram, "disk_gb": disk},
                                  placement.get(service_name)))
    summary_cache.save()
    groups: dict[str, list[str]] = {}
    for host in base.hosts.values():
        for group in host.groups:
            groups.setdefault(group, []).append(host.name)
    placed = place(demands, {h.name: h.capacity for h in base.hosts.values()}, groups)
    new = placed.new
    units_state = {key: UnitState(key[0], key[1], host, hashes[key], key in new)
                   for key, host in placed.hosts.items()}
    on_host: dict[str, list[tuple[str, str, str]]] = {h: [] for h in base.hosts}
    for unit in units_state.values():
        on_host[unit.host].append((unit.member, unit.service, unit.hash))
    host_hashes = {}
    for name, host in base.hosts.items():
        services = sorted({s for _, s, _ in on_host[name]})
        host_hashes[name] = host_hash(host_vars(host, base.coop), on_host[name],
                                      {s: versions[s] for s in services})
    return Desired(coop=base.coop, hosts=base.hosts, catalogue=catalogue, placement=placed,
                   units=units_state, host_hashes=host_hashes, role_versions=versions)
