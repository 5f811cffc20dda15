"""Placement: which host runs each (member, service) unit. Pure, deterministic and sticky.

A unit recorded in its member file stays where it is (it never moves by itself, even when its
host is now over capacity: moving is `coophost member move`). A new unit goes to the host of
its service's group with the most free declared capacity that fits it; ties go to the host
name that sorts first. Units are placed in (service, member) order, so the same registry
always gives the same placement.

The commands that record a placement decide it here (`place_unit`, `check_move`) from the co-op
they read under the lock, and hand the host to `registry.edit`, which only writes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from coophost.errors import ConfigError, UsageError
from coophost.registry import checks
from coophost.registry.catalogue import Catalogue
from coophost.registry.model import Member, Registry

RESOURCES = ("ram_mb", "disk_gb")


@dataclass(slots=True)
class Demand:
    """One unit to place: who, what, what it costs, and where it is recorded (if anywhere)."""

    member: str
    service: str
    group: str
    cost: Mapping[str, int]
    recorded: str | None = None


@dataclass
class Placement:
    """The outcome: a host per unit, which units are newly placed, and each host's usage."""

    hosts: dict[tuple[str, str], str] = field(default_factory=dict)
    new: set[tuple[str, str]] = field(default_factory=set)
    usage: dict[str, dict[str, int]] = field(default_factory=dict)

    def overcommitted(self, capacity: Mapping[str, Mapping[str, int]]) -> list[str]:
        """Hosts whose recorded units need more than they declare."""
        return sorted(h for h, used in self.usage.items()
                      if any(used[r] > capacity[h][r] for r in RESOURCES))


class NoHostFits(ConfigError):
    """No host of the service's group has room for a unit (exit 2)."""


def free(capacity: Mapping[str, int], used: Mapping[str, int]) -> dict[str, int]:
    """Return what is left of `capacity` after `used`."""
    return {r: capacity[r] - used[r] for r in RESOURCES}


def fits(capacity: Mapping[str, int], used: Mapping[str, int], cost: Mapping[str, int]) -> bool:
    """Whether `cost` fits into what `used` leaves of `capacity`."""
    return all(used[r] + cost[r] <= capacity[r] for r in RESOURCES)


def place(demands: Iterable[Demand], capacity: Mapping[str, Mapping[str, int]],
          groups: Mapping[str, Iterable[str]]) -> Placement:
    """Place every unit: recorded ones where they are, new ones by free capacity.

    `capacity` maps host -> {ram_mb, disk_gb}; `groups` maps group -> its hosts. Raises
    NoHostFits for the first new unit no host can take.
    """
    result = Placement(usage={h: dict.fromkeys(RESOURCES, 0) for h in capacity})
    pending: list[Demand] = []
    for demand in demands:
        if demand.recorded is not None and demand.recorded in capacity:
            _assign(result, demand, demand.recorded)
        else:
            pending.append(demand)
    members_of = {group: sorted(hosts) for group, hosts in groups.items()}
    for demand in sorted(pending, key=lambda d: (d.service, d.member)):
        candidates = [h for h in members_of.get(demand.group, ())
                      if fits(capacity[h], result.usage[h], demand.cost)]
        if not candidates:
            raise _no_fit(demand, capacity, result, members_of.get(demand.group, []))
        best = min(candidates, key=lambda h: (-_free_share(capacity[h], result.usage[h],
                                                           demand.cost), h))
        _assign(result, demand, best)
        result.new.add((demand.member, demand.service))
    return result


def _free_share(capacity: Mapping[str, int], used: Mapping[str, int],
                cost: Mapping[str, int]) -> float:
    """Return the scarcer resource's share left after placing `cost` (0..1)."""
    return min((capacity[r] - used[r] - cost[r]) / capacity[r] if capacity[r] else 0.0
               for r in RESOURCES)


def _assign(result: Placement, demand: Demand, host: str) -> None:
    result.hosts[(demand.member, demand.service)] = host
    used, cost = result.usage[host], demand.cost
    used["ram_mb"] += cost["ram_mb"]
    used["disk_gb"] += cost["disk_gb"]


def _no_fit(demand: Demand, capacity: Mapping[str, Mapping[str, int]], result: Placement,
            hosts: list[str]) -> NoHostFits:
    need = f"{demand.cost['ram_mb']} MB RAM and {demand.cost['disk_gb']} GB disk"
    if not hosts:
        return NoHostFits(f"members/{demand.member}.yml: services.{demand.service}: no host is "
                          f"in the {demand.group!r} group", hint="add one with `coophost host "
                          f"add NAME --group {demand.group} ...`")
    left = ", ".join(f"{h}: {f['ram_mb']} MB/{f['disk_gb']} GB free"
                     for h in hosts for f in [free(capacity[h], result.usage[h])])
    return NoHostFits(f"members/{demand.member}.yml: services.{demand.service}: no host of the "
                      f"{demand.group!r} group has {need} free ({left})",
                      hint="add a host, raise a host's declared capacity, or lower the "
                      "service's settings")


def demands(members: Mapping[str, Member], catalogue: Catalogue) -> list[Demand]:
    """One Demand per enabled service of `members`, with its cost and recorded host."""
    found = []
    for slug, member in members.items():
        for name, settings in member.services.items():
            service = catalogue.services[name]
            found.append(Demand(slug, name, service.group, service.unit_cost(settings),
                                member.placement.get(name)))
    return found


def place_unit(registry: Registry, catalogue: Catalogue, member: Member,
               service_name: str) -> str:
    """Where a new unit (`member`'s `service_name`, not recorded yet) goes.

    `registry` is the co-op as read (with hosts.yml), `member` the member as it is about to be
    written (its new settings decide the unit's cost). The unit is placed given every recorded
    placement of the co-op; other members' units not yet recorded take no room yet. Raises
    NoHostFits (exit 2) when no host of the service's group has room.
    """
    members = dict(registry.members)
    members[member.slug] = member
    wanted = (member.slug, service_name)
    needed = [d for d in demands(members, catalogue)
              if d.recorded is not None or (d.member, d.service) == wanted]
    groups: dict[str, list[str]] = {}
    for host in registry.hosts.values():
        for group in host.groups:
            groups.setdefault(group, []).append(host.name)
    result = place(needed, {h.name: h.capacity for h in registry.hosts.values()}, groups)
    return result.hosts[wanted]


def check_move(registry: Registry, catalogue: Catalogue, slug: str, service_name: str,
               host_name: str, force: bool = False) -> None:
    """Refuse a move of a member's unit to `host_name` that cannot be recorded.

    The unit must be enabled, the host in the service's group and (unless `force`) with room
    for it beside what is recorded there. `registry` is the co-op as read, with hosts.yml.
    UsageError or ConfigError (exit 2).
    """
    member = registry.members.get(slug)
    if member is None or service_name not in member.services:
        raise UsageError(f"{slug} does not have {service_name!r} enabled")
    service = catalogue.services[service_name]
    host = registry.hosts.get(host_name)
    if host is None:
        raise checks.no_host(host_name, registry.hosts)
    if service.group not in host.groups:
        raise UsageError(f"host {host_name!r} is not in the {service.group!r} group")
    others = {s: m for s, m in registry.members.items() if s != slug}
    used = dict.fromkeys(RESOURCES, 0)
    for demand in demands(others, catalogue):
        if demand.recorded == host_name:
            for r in RESOURCES:
                used[r] += demand.cost[r]
    for other_service, other_host in member.placement.items():
        if other_host == host_name and other_service != service_name:
            cost = catalogue.services[other_service].unit_cost(member.services[other_service])
            for r in RESOURCES:
                used[r] += cost[r]
    cost = service.unit_cost(member.services[service_name])
    if not force and not fits(host.capacity, used, cost):
        raise ConfigError(f"{host_name} has not enough free capacity for {slug}/"
                          f"{service_name} (needs {cost['ram_mb']} MB RAM, "
                          f"{cost['disk_gb']} GB disk)", hint="--force moves it anyway")


def evacuation(registry: Registry, catalogue: Catalogue, host_name: str
               ) -> dict[tuple[str, str], str]:
    """Where each unit recorded on `host_name` goes when that host is gone.

    Every other unit stays where it is recorded; the evacuated ones are placed by free
    capacity on the other hosts of their group, as new units are. Raises NoHostFits (exit 2)
    when one has nowhere to go.
    """
    if host_name not in registry.hosts:
        raise checks.no_host(host_name, registry.hosts)
    found = demands(registry.members, catalogue)
    leaving = {(d.member, d.service) for d in found if d.recorded == host_name}
    needed = [replace(d, recorded=None) if (d.member, d.service) in leaving else d
              for d in found if d.recorded is not None or (d.member, d.service) in leaving]
    groups: dict[str, list[str]] = {}
    for host in registry.hosts.values():
        if host.name != host_name:
            for group in host.groups:
                groups.setdefault(group, []).append(host.name)
    capacity = {h.name: h.capacity for h in registry.hosts.values() if h.name != host_name}
    result = place(needed, capacity, groups)
    return {key: result.hosts[key] for key in sorted(leaving)}
