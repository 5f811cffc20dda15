"""The desired state of a co-op: its registry loaded, units hashed, placed, hosts hashed.

This is the one pipeline `plan`, `render` and (later) `deploy` share: registry -> units ->
placement -> per-host hashes. Unit hashes and costs are kept in the parse cache beside each
member's record, so a warm plan re-derives only what changed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from coophost.catalogue import Catalogue, load_catalogue
from coophost.placement import Demand, Placement, place
from coophost.registry.loader import Loaded, load_registry
from coophost.render import host_hash, host_vars, unit_hash, unit_vars

ROLE_SKIP_DIRS = frozenset({"molecule", "tests", "__pycache__"})


def roles_dir() -> Path | None:
    """Where the project's roles live: shipped in the package, or beside it in a checkout."""
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


@dataclass(frozen=True)
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

    loaded: Loaded
    placement: Placement
    units: dict[tuple[str, str], UnitState]
    host_hashes: dict[str, str]
    role_versions: dict[str, str]


def compute(root: Path, *, use_cache: bool = True) -> Desired:
    """Load the co-op at `root` and compute its desired state (reads only; the cache aside)."""
    catalogue = load_catalogue()
    versions = role_versions(catalogue)
    salt = hashlib.sha256(repr(sorted(versions.items())).encode()).hexdigest()
    loaded = load_registry(root, use_cache=use_cache, salt=salt)
    registry = loaded.registry
    demands = []
    hashes: dict[tuple[str, str], str] = {}
    for slug, member in registry.members.items():
        derived = _derived(loaded, slug, versions)
        for service_name, (digest, ram, disk) in derived.items():
            service = catalogue.services[service_name]
            hashes[(slug, service_name)] = digest
            demands.append(Demand(slug, service_name, service.group,
                                  {"ram_mb": ram, "disk_gb": disk},
                                  member.placement.get(service_name)))
    groups: dict[str, list[str]] = {}
    for host in registry.hosts.values():
        for group in host.groups:
            groups.setdefault(group, []).append(host.name)
    placement = place(demands, {h.name: h.capacity for h in registry.hosts.values()}, groups)
    units = {key: UnitState(key[0], key[1], host, hashes[key], key in placement.new)
             for key, host in placement.hosts.items()}
    on_host: dict[str, list[tuple[str, str, str]]] = {h: [] for h in registry.hosts}
    for unit in units.values():
        on_host[unit.host].append((unit.member, unit.service, unit.hash))
    host_hashes = {}
    for name, host in registry.hosts.items():
        services = sorted({s for _, s, _ in on_host[name]})
        host_hashes[name] = host_hash(host_vars(host, registry.coop), on_host[name],
                                      {s: versions[s] for s in services})
    loaded.cache.save()
    return Desired(loaded=loaded, placement=placement, units=units, host_hashes=host_hashes,
                   role_versions=versions)


def _derived(loaded: Loaded, slug: str, versions: dict[str, str]) -> dict[str, Any]:
    """Return (unit hash, RAM, disk) per enabled service of `slug`, from the cache or computed."""
    extras = loaded.extras[slug]
    member = loaded.registry.members[slug]
    derived = extras.get("units")
    if derived is None or set(derived) != set(member.services):
        derived = {}
        for service_name, settings in member.services.items():
            service = loaded.catalogue.services[service_name]
            cost = service.unit_cost(settings)
            derived[service_name] = (
                unit_hash(unit_vars(member, service), service, versions[service_name]),
                cost["ram_mb"], cost["disk_gb"])
        extras["units"] = derived
        loaded.cache.mark_dirty()
    return derived
