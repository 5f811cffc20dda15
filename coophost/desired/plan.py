"""The plan: desired state against what state.db records as last applied. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from coophost.state import Applied

ADD, CHANGE, REMOVE = "add", "change", "remove"


@dataclass(frozen=True)
class Change:
    """One unit that a deploy would add to, change on, or remove from a host."""

    host: str
    member: str
    service: str
    action: str
    hash: str | None
    applied_hash: str | None
    moved: str | None = None  # the other host, when the unit moves between hosts


@dataclass(frozen=True)
class HostPlan:
    """A host's desired hash against its applied one."""

    host: str
    hash: str | None
    applied_hash: str | None

    @property
    def status(self) -> str:
        """new, changed, unchanged, or gone (no longer in hosts.yml)."""
        if self.hash is None:
            return "gone"
        if self.applied_hash is None:
            return "new"
        return "unchanged" if self.hash == self.applied_hash else "changed"


@dataclass
class Plan:
    """Every change, and every host's status."""

    changes: list[Change] = field(default_factory=list)
    hosts: dict[str, HostPlan] = field(default_factory=dict)

    @property
    def pending(self) -> bool:
        """Whether a deploy has anything to do."""
        return bool(self.changes) or any(h.status != "unchanged" for h in self.hosts.values())

    def changed_hosts(self) -> list[str]:
        """Hosts a deploy must touch."""
        touched = {c.host for c in self.changes}
        touched.update(h for h, p in self.hosts.items() if p.status != "unchanged")
        return sorted(touched)

    def as_json(self) -> dict[str, object]:
        """Plain data for `--json`."""
        return {"pending": self.pending, "changes": [asdict(c) for c in self.changes],
                "hosts": {h: {"status": p.status, "hash": p.hash,
                              "applied_hash": p.applied_hash}
                          for h, p in sorted(self.hosts.items())}}


def diff(units: Mapping[tuple[str, str, str], str], host_hashes: Mapping[str, str],
         applied: Applied) -> Plan:
    """Return changes from `applied` to the desired `units` ((host, member, service) -> hash)."""
    plan = Plan()
    if units != applied.units:  # one comparison when nothing changed
        _unit_changes(plan, units, applied.units)
    for host in set(host_hashes) | set(applied.hosts):
        plan.hosts[host] = HostPlan(host, host_hashes.get(host), applied.hosts.get(host))
    return plan


def _unit_changes(plan: Plan, units: Mapping[tuple[str, str, str], str],
                  applied: Mapping[tuple[str, str, str], str]) -> None:
    """Add every unit added, changed, moved or removed to `plan`, sorted by host."""
    changed = [key for key, digest in units.items() if applied.get(key) != digest]
    removed = [key for key in applied if key not in units]
    # Where else a unit is (a move) matters only for units added or removed on a host.
    desired_at = {(m, s): h for h, m, s in units} if removed else {}
    applied_at: dict[tuple[str, str], list[str]] = {}
    if any(key not in applied for key in changed):
        for h, m, s in applied:
            applied_at.setdefault((m, s), []).append(h)
    for key in changed:
        before = applied.get(key)
        host, member, service = key
        others = [h for h in applied_at.get((member, service), []) if h != host]
        plan.changes.append(Change(host, member, service, ADD if before is None else CHANGE,
                                   units[key], before, others[0] if others and before is None
                                   else None))
    for key in removed:
        host, member, service = key
        plan.changes.append(Change(host, member, service, REMOVE, None, applied[key],
                                   desired_at.get((member, service))))
    plan.changes.sort(key=lambda c: (c.host, c.member, c.service))


def only(plan: Plan, *, member: str | None = None, host: str | None = None) -> Plan:
    """Return the part of `plan` that concerns one member and/or one host."""
    changes = [c for c in plan.changes
               if (member is None or c.member == member) and (host is None or c.host == host)]
    # A host's own change (its vars, its roles) belongs to no member: a member's plan is its units.
    hosts = {} if member is not None else {
        h: p for h, p in plan.hosts.items() if host is None or h == host}
    return Plan(changes=changes, hosts=hosts)
