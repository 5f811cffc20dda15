"""Members' service requests and the sysadmins' decisions, kept as files in the registry.

Each request is `requests/<id>.yml` (plain YAML, committed with the rest of the co-op): who
filed it, for which member and service, the settings asked for, its state, and a history of
every change (who, when, what, why). Every change is also appended to `audit.log` (one JSON
object per line). States: pending -> approved | denied | canceled. An approved request whose
unit is applied as approved reads as `deployed` (computed from the deploy record, never
stored, so it cannot go stale).

Filing and canceling take the requests lock only, so a member is never kept waiting by a
deploy holding the co-op lock; approving takes both (it writes the member file).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coophost.errors import ConfigError, UsageError
from coophost.fsutil import atomic_write
from coophost.lock import REQUESTS_LOCK, coop_lock
from coophost.registry import checks

REQUESTS_DIR = "requests"
AUDIT_LOG = "audit.log"
STATES = ("pending", "approved", "denied", "canceled")
REQUEST_KEYS = ("id", "member", "service", "settings", "state", "filed", "filed_by", "why",
                "history")
MAX_WHY = 500
MAX_SETTINGS = 20


@dataclass
class Request:
    """One request as stored."""

    id: int
    member: str
    service: str
    settings: dict[str, Any]
    state: str
    filed: str
    filed_by: str
    why: str = ""
    history: list[dict[str, str]] = field(default_factory=list)

    def as_plain(self) -> dict[str, Any]:
        """The request as YAML/JSON data."""
        return {"id": self.id, "member": self.member, "service": self.service,
                "settings": self.settings, "state": self.state, "filed": self.filed,
                "filed_by": self.filed_by, "why": self.why, "history": self.history}


def now() -> str:
    """The current UTC time, to the second, in ISO 8601."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def actor() -> str:
    """Who runs this command: $COOPHOST_ACTOR, else the login name."""
    name = os.environ.get("COOPHOST_ACTOR") or getpass.getuser()
    return checks.text(name, "(environment)", "COOPHOST_ACTOR", 100)


def request_path(root: Path, request_id: int) -> Path:
    """requests/<id>.yml (the id zero-padded so files sort in filing order)."""
    return root / REQUESTS_DIR / f"{request_id:05d}.yml"


def parse_request(data: object, file: str) -> Request:
    """Check one request file's content."""
    top = checks.mapping(data, file, "")
    checks.refuse_unknown_keys(top, REQUEST_KEYS, file, "")
    state = top.get("state")
    if state not in STATES:
        checks.fail(file, "state", state, f"must be one of {', '.join(STATES)}")
    settings = checks.mapping(top.get("settings"), file, "settings")
    history = [checks.mapping(item, file, f"history[{i}]")
               for i, item in enumerate(checks.sequence(top.get("history"), file, "history"))]
    return Request(
        id=checks.integer(top.get("id"), file, "id", 1),
        member=checks.slug(top.get("member"), file, "member"),
        service=checks.slug(top.get("service"), file, "service"),
        settings=settings, state=str(state),
        filed=checks.text(top.get("filed"), file, "filed", 40),
        filed_by=checks.text(top.get("filed_by"), file, "filed_by", 120),
        why=checks.text(top["why"], file, "why", MAX_WHY) if top.get("why") else "",
        history=[{str(k): str(v) for k, v in item.items()} for item in history])


def load_requests(root: Path) -> list[Request]:
    """Every request of the co-op, in filing order."""
    from coophost.registry.yamlio import load_file

    folder = root / REQUESTS_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.yml")):
        request = parse_request(load_file(path, f"{REQUESTS_DIR}/{path.name}"),
                                f"{REQUESTS_DIR}/{path.name}")
        if request_path(root, request.id).name != path.name:
            raise ConfigError(f"{REQUESTS_DIR}/{path.name}: id {request.id} does not match "
                              "the file name")
        found.append(request)
    return found


def get_request(root: Path, request_id: int) -> Request:
    """One request by id, or a UsageError."""
    from coophost.registry.yamlio import load_file

    path = request_path(root, request_id)
    if not path.is_file():
        raise UsageError(f"no request {request_id}", hint="`coophost requests list` shows them")
    return parse_request(load_file(path, f"{REQUESTS_DIR}/{path.name}"),
                         f"{REQUESTS_DIR}/{path.name}")


def _save(root: Path, request: Request) -> None:
    from coophost.registry.yamlio import dump_plain

    text = (f"# Request {request.id}: {request.member} asks for {request.service}. "
            "Written by coophost.\n"
            + dump_plain(request.as_plain()))
    atomic_write(request_path(root, request.id), text)


def audit(root: Path, event: Mapping[str, Any]) -> None:
    """Append one event (with its time) to audit.log, synced before returning."""
    line = json.dumps({"at": now(), **event}, sort_keys=True, ensure_ascii=False) + "\n"
    fd = os.open(root / AUDIT_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_audit(root: Path) -> list[dict[str, Any]]:
    """Every audit event, oldest first."""
    path = root / AUDIT_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_allowed(root: Path, slug: str, service_name: str,
                  settings: Mapping[str, Any]) -> None:
    """Refuse (exit 2, nothing written) what the member may not have.

    The member must be active; the service must be one coop.yml's `allowances.services`
    lists (when it lists any); and the member file with these settings must validate, which
    checks every quota ceiling and name.
    """
    from coophost.registry.edit import check_enable
    from coophost.registry.loader import load_registry

    loaded = load_registry(root, need_hosts=False)
    member = loaded.registry.members.get(slug)
    if member is None:
        raise UsageError(f"no member {slug!r}")
    if member.status != "active":
        raise UsageError(f"member {slug} is {member.status}: only active members may request "
                         "services")
    loaded.catalogue.get(service_name, "(request)", "service")
    allowed = loaded.registry.coop.allowances["services"]
    if allowed and service_name not in allowed:
        raise UsageError(f"service {service_name!r} is not offered to members "
                         f"(coop.yml allowances.services: {', '.join(sorted(allowed))})")
    check_enable(loaded, slug, service_name, settings)


def file_request(root: Path, slug: str, service_name: str, settings: Mapping[str, Any],
                 filed_by: str) -> Request:
    """File a request (validated as an approval would be); return it."""
    if len(settings) > MAX_SETTINGS:
        raise UsageError(f"at most {MAX_SETTINGS} settings in one request")
    check_allowed(root, slug, service_name, settings)
    with coop_lock(root, purpose=f"request {slug} {service_name}", name=REQUESTS_LOCK,
                   wait=10.0):
        existing = load_requests(root)
        open_ones = [r for r in existing
                     if r.member == slug and r.service == service_name and r.state == "pending"]
        if open_ones:
            raise UsageError(f"request {open_ones[0].id} for {service_name} is still pending",
                             hint=f"cancel it first (cancel {open_ones[0].id})")
        when = now()
        request = Request(id=max((r.id for r in existing), default=0) + 1, member=slug,
                          service=service_name, settings=dict(settings), state="pending",
                          filed=when, filed_by=filed_by,
                          history=[{"at": when, "by": filed_by, "action": "filed"}])
        (root / REQUESTS_DIR).mkdir(exist_ok=True)
        _save(root, request)
        audit(root, {"by": filed_by, "action": "request filed", "request": request.id,
                     "member": slug, "service": service_name, "settings": dict(settings)})
    return request


def _decide(root: Path, request_id: int, by: str, action: str, state: str, why: str,
            member: str | None = None) -> Request:
    request = get_request(root, request_id)
    if member is not None and request.member != member:
        raise UsageError(f"no request {request_id}")  # another member's: not even its existence
    if request.state != "pending":
        raise UsageError(f"request {request_id} is {request.state}, not pending")
    request.state = state
    if why:
        request.why = why
    request.history.append({"at": now(), "by": by, "action": action,
                            **({"why": why} if why else {})})
    _save(root, request)
    audit(root, {"by": by, "action": f"request {action}", "request": request_id,
                 "member": request.member, "service": request.service,
                 **({"why": why} if why else {})})
    return request


def cancel_request(root: Path, request_id: int, slug: str, by: str) -> Request:
    """A member withdraws its own pending request."""
    with coop_lock(root, purpose=f"cancel {request_id}", name=REQUESTS_LOCK, wait=10.0):
        return _decide(root, request_id, by, "canceled", "canceled", "", member=slug)


def deny_request(root: Path, request_id: int, by: str, why: str) -> Request:
    """A sysadmin refuses a pending request, saying why."""
    why = checks.text(why, "(command line)", "--why", MAX_WHY)
    if not why.strip():
        raise UsageError("--why: say why the request is denied")
    with coop_lock(root, purpose=f"deny {request_id}", name=REQUESTS_LOCK, wait=10.0):
        return _decide(root, request_id, by, "denied", "denied", why)


def approve_request(root: Path, request_id: int, by: str, why: str = "") -> tuple[Request, str]:
    """A sysadmin approves: re-check, update the member file (placing the unit), record it.

    Returns the request and the host the unit is placed on. Takes the co-op lock (it writes
    a member file) and then the requests lock.
    """
    from coophost.registry.edit import enable_service

    with coop_lock(root, purpose=f"approve {request_id}"), \
            coop_lock(root, purpose=f"approve {request_id}", name=REQUESTS_LOCK, wait=10.0):
        request = get_request(root, request_id)
        if request.state != "pending":
            raise UsageError(f"request {request_id} is {request.state}, not pending")
        check_allowed(root, request.member, request.service, request.settings)
        _, host = enable_service(root, request.member, request.service, request.settings)
        return _decide(root, request_id, by, "approved", "approved", why), host


def shown_state(request: Request, deployed: Sequence[tuple[str, str]]) -> str:
    """The state to show: `deployed` for an approved request whose unit is applied."""
    if request.state == "approved" and (request.member, request.service) in deployed:
        return "deployed"
    return request.state


def unit_states(root: Path) -> dict[tuple[str, str], tuple[str, bool]]:
    """(member, service) -> (host, deployed): deployed when the applied hash matches."""
    from coophost.desired import compute
    from coophost.state import StateDB

    desired = compute(root)
    with StateDB(root) as db:
        applied = db.applied()
    return {key: (unit.host, applied.units.get((unit.host, *key)) == unit.hash)
            for key, unit in desired.units.items()}


def deployed_units(root: Path) -> list[tuple[str, str]]:
    """(member, service) units whose applied hash matches the registry's (nothing pending)."""
    return [key for key, (_, deployed) in unit_states(root).items() if deployed]
