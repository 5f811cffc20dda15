"""A member's life at the co-op after joining: suspension, resumption, departure, purge.

Every change is written to the member file (under the co-op lock) and to audit.log.
Departure exports first: the member's archive must be complete before anything changes.
After `retention.departed_days` (coop.yml, default 30) `purge` removes the services of
departed members from their files, and the next deploy takes them off the hosts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coophost.errors import UsageError
from coophost.lock import coop_lock
from coophost.members.audit import audit
from coophost.registry import checks
from coophost.registry.loader import Loaded
from coophost.registry.model import Member

DEFAULT_DEPARTED_DAYS = 30


def set_status(root: Path, slug: str, status: str, by: str, why: str = "") -> Member | None:
    """Suspend or resume a member; audited. None when it already has that status (no write)."""
    from coophost.registry.edit import set_status as write_status
    from coophost.registry.loader import load_registry

    with coop_lock(root, purpose=f"member {status} {slug}"):
        loaded = load_registry(root, need_hosts=False)
        current = loaded.registry.members.get(slug)
        if current is None:
            raise checks.no_member(slug, loaded.registry.members)
        if current.status == "departed":
            raise UsageError(f"member {slug} has departed; it cannot be {status} again")
        if current.status == status:
            return None
        member = write_status(root, loaded, slug, status)
    audit(root, {"by": by, "action": f"member {'resumed' if status == 'active' else status}",
                 "member": slug, **({"why": why} if why else {})})
    return member


def move(root: Path, slug: str, service: str, host: str, by: str, force: bool = False,
         today: dt.date | None = None) -> Member | None:
    """Record a member's service on another host; audited. None when it is there already.

    A unit that was placed elsewhere records where it came from (`moved:`): that host relays
    its mail to the new one, and `members.carry` copies its data, until `expire_moves`.
    """
    from coophost.registry.edit import move_unit
    from coophost.registry.loader import load_registry, with_hosts
    from coophost.registry.placement import check_move

    with coop_lock(root, purpose=f"member move {slug} {service}"):
        loaded = load_registry(root, need_hosts=False)
        current = loaded.registry.members.get(slug)
        if current is None:
            raise checks.no_member(slug, loaded.registry.members)
        was = current.placement.get(service)
        if was == host and service in current.services:
            return None
        check_move(with_hosts(loaded), loaded.catalogue, slug, service, host, force)
        if was and was != host and loaded.catalogue.services[service].data.get("dumps") \
                and _applied_on(root, was, slug, service):
            # carrying moves files only: the unit's databases would stay behind
            raise UsageError(
                f"{slug}/{service} has databases on {was}, and a move carries files only: "
                "moving a unit with databases is not built yet; nothing was recorded",
                hint=f"`coophost member export {slug}` holds its files and database dumps")
        day = (today or dt.date.today()).isoformat()
        member = move_unit(root, loaded, slug, service, host,
                           moved_from=was if was and _applied_on(root, was, slug, service)
                           else None, on=day)
    audit(root, {"by": by, "action": "member moved", "member": slug, "service": service,
                 "from": was or "(not placed yet)", "to": host})
    return member


def _applied_on(root: Path, host: str, slug: str, service: str) -> bool:
    """Whether a deploy applied the unit on `host` (then it has data and mail to carry)."""
    from coophost.state import StateDB

    with StateDB(root) as db:
        return (host, slug, service) in db.applied().units


@dataclass
class Departure:
    """What `depart` did: the archive, its checksum, and when services go."""

    archive: Path
    sha256: str
    files: int
    departed_on: str
    purge_after: str


def depart(root: Path, slug: str, out: Path, by: str, today: dt.date | None = None
           ) -> Departure:
    """Export the member's data to `out`, then mark the member departed.

    Logins stop at the next deploy; the services go after the retention period (`purge`).
    """
    from coophost.fsutil import atomic_stream
    from coophost.members.export import export_member
    from coophost.registry.edit import update_member
    from coophost.registry.loader import load_registry

    loaded = load_registry(root)  # with hosts.yml: the export reaches every host
    registry = loaded.registry
    member = registry.members.get(slug)
    if member is None:
        raise checks.no_member(slug, loaded.registry.members)
    if member.status == "departed":
        raise UsageError(f"member {slug} departed on {member.departed_on} already")
    with atomic_stream(out) as handle:
        manifest = export_member(loaded, slug, handle)
    digest = hashlib.sha256()
    with out.open("rb") as archive:
        for block in iter(lambda: archive.read(1 << 20), b""):
            digest.update(block)
    day = (today or dt.date.today()).isoformat()

    def change(doc: Any) -> None:
        doc["status"] = "departed"
        doc["departed_on"] = day

    # The export may take long: the lock is taken for the write only, which reads the co-op
    # again (and never overwrites a member file changed since: exit 3).
    with coop_lock(root, purpose=f"member depart {slug}"):
        update_member(root, load_registry(root, need_hosts=False), slug, change)
    days = registry.coop.retention.get("departed_days", DEFAULT_DEPARTED_DAYS)
    after = (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()
    audit(root, {"by": by, "action": "member departed", "member": slug,
                 "export_sha256": digest.hexdigest(), "files": len(manifest.files),
                 "purge_after": after})
    return Departure(out, digest.hexdigest(), len(manifest.files), day, after)


DEFAULT_RELAY_DAYS = 7


def moves_due(loaded: Loaded, day: dt.date) -> dict[str, list[str]]:
    """The move records older than `retention.relay_days` (default 7), by member."""
    days = loaded.registry.coop.retention.get("relay_days", DEFAULT_RELAY_DAYS)
    due = {}
    for member in loaded.registry.members.values():
        old = [service for service, record in sorted(member.moved.items())
               if dt.date.fromisoformat(record["on"]) + dt.timedelta(days=days) <= day]
        if old:
            due[member.slug] = old
    return due


def expire_moves(root: Path, by: str, today: dt.date | None = None, dry_run: bool = False
                 ) -> list[str]:
    """Drop the move records older than `retention.relay_days` (default 7).

    Their old hosts stop relaying at the next deploy. Return `slug/service` of each.
    """
    from coophost.registry.edit import drop_moves
    from coophost.registry.loader import load_registry

    day = today or dt.date.today()
    dropped = []
    if dry_run:
        due = moves_due(load_registry(root, need_hosts=False), day)
        return [f"{slug}/{s}" for slug, services in sorted(due.items()) for s in services]
    with coop_lock(root, purpose="expire moves"):
        for slug, old in sorted(moves_due(load_registry(root, need_hosts=False), day).items()):
            if old:
                drop_moves(root, load_registry(root, need_hosts=False), slug, old)
                dropped += [f"{slug}/{service}" for service in old]
    for name in dropped:
        audit(root, {"by": by, "action": "move record expired", "unit": name})
    return dropped


def due_for_purge(coop: Path | Loaded, today: dt.date | None = None) -> list[Member]:
    """Departed members whose retention period is over and who still have services."""
    from coophost.registry.loader import load_registry

    registry = (coop if isinstance(coop, Loaded) else load_registry(coop, need_hosts=False)
                ).registry
    days = registry.coop.retention.get("departed_days", DEFAULT_DEPARTED_DAYS)
    day = today or dt.date.today()
    return [m for m in registry.members.values()
            if m.status == "departed" and m.services
            and dt.date.fromisoformat(m.departed_on) + dt.timedelta(days=days) <= day]


def purge(root: Path, by: str, today: dt.date | None = None) -> list[str]:
    """Remove the services of every departed member past retention; return their slugs."""
    from coophost.registry.edit import update_member
    from coophost.registry.loader import load_registry

    def change(doc: Any) -> None:
        doc["services"] = {}
        doc["placement"] = {}
        if "moved" in doc:
            del doc["moved"]

    done = []
    with coop_lock(root, purpose="members purge"):
        loaded = load_registry(root, need_hosts=False)
        for member in due_for_purge(loaded, today):
            update_member(root, loaded, member.slug, change)
            audit(root, {"by": by, "action": "member services removed", "member": member.slug,
                         "services": sorted(member.services)})
            done.append(member.slug)
    return done
