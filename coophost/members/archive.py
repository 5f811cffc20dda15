"""The co-op's archive of data no member owns any more, and its purge.

When a unit leaves a host (its member removed, purged or moved), the service's role moves the
unit's data into the host's archive folder (the catalogue's `data.archive`), named
`<owner>.<UTC time>` where owner is `<slug>.<life id>`: no login reaches it, and no later
member given the same names can. Secrets of removed members wait in `secrets/removed/`.
Both are kept for the retention period (coop.yml `retention.departed_days`), then deleted by
`coophost members purge`, which audits every deletion. Nothing here deletes data of a member
that is still active or suspended.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coophost.errors import CoophostError

# <owner>.<YYYYmmddTHHMMSSZ>[-n]; owner is <slug>.<life> or legacy-<domain> (before lives).
ENTRY = re.compile(r"^(?P<owner>[a-z0-9][a-z0-9.-]{0,300})\."
                   r"(?P<stamp>\d{8}T\d{6}Z)(?:-\d{1,4})?(?:\.yml)?$")


@dataclass(frozen=True)
class Archived:
    """One archived folder on a host, or one removed member's secrets file (host "")."""

    host: str
    service: str
    path: str
    owner: str
    archived: dt.date

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        return {"host": self.host or None, "service": self.service or None, "path": self.path,
                "owner": self.owner, "archived": self.archived.isoformat()}


def parse_entry(name: str) -> tuple[str, dt.date] | None:
    """The owner and archive date of an archive entry's name, or None if it is not one."""
    found = ENTRY.match(name)
    if found is None:
        return None
    try:
        when = dt.datetime.strptime(found["stamp"], "%Y%m%dT%H%M%SZ").date()
    except ValueError:
        return None
    return found["owner"], when


def due(entries: list[Archived], living_owners: set[str], days: int, today: dt.date
        ) -> list[Archived]:
    """The entries past retention whose owner is no living member (pure)."""
    return [e for e in entries if e.owner not in living_owners
            and e.archived + dt.timedelta(days=days) <= today]


def list_archives(root: Path) -> list[Archived]:
    """Every archived folder on every host, and every kept secrets file of a removed member."""
    from coophost.layout import KNOWN_HOSTS_FILE, REMOVED_DIR, SECRETS_DIR
    from coophost.registry.catalogue import load_catalogue
    from coophost.registry.hosts import load_hosts
    from coophost.ssh import connect, run_argv

    folders = {name: str(s.data["archive"]) for name, s in load_catalogue().services.items()
               if s.data.get("archive")}
    found: list[Archived] = []
    kept = root / SECRETS_DIR / REMOVED_DIR
    for path in sorted(kept.glob("*.yml")) if kept.is_dir() else []:
        parsed = parse_entry(path.name)
        if parsed:
            found.append(Archived("", "", str(path.relative_to(root)), *parsed))
    if not folders:
        return found
    for host in load_hosts(root):
        with connect(host, root / KNOWN_HOSTS_FILE) as client:
            for service, folder in sorted(folders.items()):
                status, out, err = run_argv(client, ["sudo", "-n", "find", folder,
                                                     "-mindepth", "1", "-maxdepth", "1",
                                                     "-printf", r"%f\0"])
                if status != 0:
                    if "No such file" in err:
                        continue
                    raise CoophostError(f"{host.name}: cannot list {folder}: {err.strip()}")
                for name in sorted(n for n in out.split("\0") if n):
                    parsed = parse_entry(name)
                    if parsed:
                        found.append(Archived(host.name, service, f"{folder}/{name}", *parsed))
    return found


def living_owners(root: Path) -> set[str]:
    """Owners whose data must stay: members that are active or suspended."""
    from coophost.registry.loader import load_registry

    members = load_registry(root, need_hosts=False).registry.members.values()
    return {m.owner for m in members if m.status != "departed"}


def delete(root: Path, entries: list[Archived], by: str) -> None:
    """Delete archived entries, one SSH session per host, each deletion audited as it goes."""
    from coophost.layout import KNOWN_HOSTS_FILE
    from coophost.members.audit import audit
    from coophost.registry.hosts import load_hosts
    from coophost.ssh import connect, run_argv

    for entry in entries:
        if not entry.host:
            (root / entry.path).unlink()
            audit(root, {"by": by, "action": "archive deleted", **entry.as_dict()})
    hosts = {h.name: h for h in load_hosts(root)}
    for name in sorted({e.host for e in entries if e.host}):
        with connect(hosts[name], root / KNOWN_HOSTS_FILE) as client:
            for entry in (e for e in entries if e.host == name):
                status, _, err = run_argv(client, ["sudo", "-n", "rm", "-rf",
                                                   "--one-file-system", "--", entry.path])
                if status != 0:
                    raise CoophostError(f"{name}: cannot delete {entry.path}: {err.strip()}")
                audit(root, {"by": by, "action": "archive deleted", **entry.as_dict()})
