"""Members' service requests and the sysadmins' decisions, kept as files in the registry.

Each request is a plain YAML file (committed with the rest of the co-op): who filed it, for
which member and service, the settings asked for, its state, and a history of every change
(who, when, what, why). Pending requests live in `requests/open/<member>/<id>.yml`, decided
ones in `requests/closed/<member>/<id>.yml`: checking a member's open requests, or listing
pending ones, reads only the files that can matter, never every request ever filed. Files of
the older flat layout (`requests/<id>.yml`) are still read, and moved into place by the next
change to requests. Every change is also appended to `audit.log` (one JSON object per line).
States: pending -> approved | denied | canceled. An approved request whose unit is applied as
approved reads as `deployed` (computed from the deploy record, never stored, so it cannot go
stale). A member may have at most coop.yml's `allowances.open_requests` (default 10) pending.

Filing and canceling take the requests lock only, so a member is never kept waiting by a
deploy holding the co-op lock; approving takes both (it writes the member file).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coophost.errors import ConfigError, UsageError
from coophost.fsutil import read_regular, replace_if_unchanged
from coophost.layout import CLOSED_DIR, OPEN_DIR, REQUESTS_DIR, REQUESTS_LOCK
from coophost.lock import coop_lock
from coophost.members.audit import audit, now
from coophost.registry import checks
from coophost.registry.loader import Loaded
from coophost.registry.model import Coop

RERUN = "nothing was written; run the command again"
MAX_ID = 10**9 - 1
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






def request_path(root: Path, request: Request) -> Path:
    """requests/open|closed/<member>/<id>.yml (the id zero-padded so files sort in order)."""
    folder = OPEN_DIR if request.state == "pending" else CLOSED_DIR
    return root / REQUESTS_DIR / folder / request.member / f"{request.id:05d}.yml"


def _label(root: Path, path: Path) -> str:
    return str(path.relative_to(root))


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
        id=checks.integer(top.get("id"), file, "id", 1, MAX_ID),
        member=checks.slug(top.get("member"), file, "member"),
        service=checks.slug(top.get("service"), file, "service"),
        settings=settings, state=str(state),
        filed=checks.text(top.get("filed"), file, "filed", 40),
        filed_by=checks.text(top.get("filed_by"), file, "filed_by", 120),
        why=checks.text(top["why"], file, "why", MAX_WHY) if top.get("why") else "",
        history=[{str(k): str(v) for k, v in item.items()} for item in history])


def _read(root: Path, path: Path) -> tuple[Request, bytes]:
    """One request file, read safely and checked against where it lies; with its bytes."""
    from coophost.registry.yamlio import MAX_FILE_BYTES, load_bytes

    label = _label(root, path)
    raw = read_regular(path, label, MAX_FILE_BYTES)
    request = parse_request(load_bytes(raw, label), label)
    if path.name != f"{request.id:05d}.yml":
        raise ConfigError(f"{label}: id {request.id} does not match the file name")
    if path.parent.parent.name in (OPEN_DIR, CLOSED_DIR) and path.parent.name != request.member:
        raise ConfigError(f"{label}: member {request.member} does not match the folder")
    return request, raw


def _files(root: Path, member: str | None, folders: Sequence[str]) -> list[Path]:
    """The request files in `folders` (of one member, or of all), old flat ones included."""
    base = root / REQUESTS_DIR
    found = sorted(base.glob("*.yml"))  # the flat layout, until the next change moves them
    for folder in folders:
        pattern = f"{member}/*.yml" if member is not None else "*/*.yml"
        found.extend(sorted((base / folder).glob(pattern)))
    return found


def load_requests(root: Path, member: str | None = None, *, closed: bool = True,
                  newest_closed: int | None = None) -> list[Request]:
    """Requests in filing order: of one member or all, pending ones and (if `closed`) others.

    Only the files that can match are read: a member's own folders, and with `closed` false
    no decided request at all. `newest_closed` reads only that many of the newest closed ones.
    """
    if member is not None:
        checks.slug(member, "(request)", "member")
    open_files = _files(root, member, (OPEN_DIR,))
    closed_files = _files(root, member, (CLOSED_DIR,)) if closed else []
    closed_files = [p for p in closed_files if p.parent.name != REQUESTS_DIR]
    if newest_closed is not None:
        closed_files = sorted(closed_files, key=_id_of, reverse=True)[:newest_closed]
    found = {}
    for path in dict.fromkeys(open_files + closed_files):
        request = _read(root, path)[0]
        if member is not None and request.member != member:
            continue
        if not closed and request.state != "pending":
            continue
        found[request.id] = request
    return [found[key] for key in sorted(found)]


def _id_of(path: Path) -> int:
    """The id a request file's name says (0 for a name that is not one)."""
    return int(path.stem) if path.stem.isdigit() and len(path.stem) < 10 else 0


def _locate(root: Path, request_id: int) -> Path | None:
    name = f"{request_id:05d}.yml"
    base = root / REQUESTS_DIR
    for path in [base / name, *base.glob(f"*/*/{name}")]:
        if path.is_file() or path.is_symlink():
            return path
    return None


def get_request(root: Path, request_id: int) -> Request:
    """One request by id, or a UsageError."""
    path = _locate(root, request_id)
    if path is None:
        raise UsageError(f"no request {request_id}", hint="`coophost requests list` shows them")
    return _read(root, path)[0]


def _text(request: Request) -> str:
    from coophost.registry.yamlio import dump_plain

    return (f"# Request {request.id}: {request.member} asks for {request.service}. "
            "Written by coophost.\n"
            + dump_plain(request.as_plain()))


def _save(root: Path, request: Request, old: Path | None = None, raw: bytes | None = None
          ) -> None:
    """Write `request` where its state says; `old` (holding `raw`) is replaced, then moved.

    The old file is compared with `raw` just before it is replaced, so a change saved since
    it was read is never overwritten (exit 3).
    """
    from coophost.registry.yamlio import MAX_FILE_BYTES

    target = request_path(root, request)
    source = old or target
    replace_if_unchanged(source, _text(request), raw, _label(root, source),
                         limit=MAX_FILE_BYTES, hint=RERUN)
    if source != target:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise ConfigError(f"{_label(root, target)} already exists",
                              hint=f"{_label(root, source)} holds the same request")
        os.rename(source, target)
        _sync_folder(target.parent)
        _sync_folder(source.parent)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tidy(root: Path, member: str | None = None) -> None:
    """Move flat-layout files, and decided requests left in open/, where they belong.

    Call under the requests lock. Only the flat files and the open files of `member` (none
    with None) are read.
    """
    for path in _files(root, member, (OPEN_DIR,) if member else ()):
        request, raw = _read(root, path)
        if path != request_path(root, request):
            _save(root, request, path, raw)


def _next_id(root: Path) -> int:
    """One more than the highest id filed (file names only; nothing is read)."""
    base = root / REQUESTS_DIR
    names = [p.name for p in base.glob("*.yml")]
    names += [p.name for folder in (OPEN_DIR, CLOSED_DIR) for p in (base / folder).glob("*/*.yml")]
    return max((_id_of(Path(name)) for name in names), default=0) + 1






def check_allowed(coop: Path | Loaded, slug: str, service_name: str,
                  settings: Mapping[str, Any]) -> Coop:
    """Refuse (exit 2, nothing written) what the member may not have; return coop.yml.

    The member must be active; the service must be one coop.yml's `allowances.services`
    lists (when it lists any); and the member file with these settings must validate, which
    checks every quota ceiling and name. `coop`: the co-op's folder, or the co-op as read.
    """
    from coophost.registry.edit import check_enable
    from coophost.registry.loader import load_registry

    loaded = coop if isinstance(coop, Loaded) else load_registry(coop, need_hosts=False)
    member = loaded.registry.members.get(slug)
    if member is None:
        raise checks.no_member(slug, loaded.registry.members)
    if member.status != "active":
        raise UsageError(f"member {slug} is {member.status}: only active members may request "
                         "services")
    loaded.catalogue.get(service_name, "(request)", "service")
    allowed = loaded.registry.coop.allowances["services"]
    if allowed and service_name not in allowed:
        raise UsageError(f"service {service_name!r} is not offered to members "
                         f"(coop.yml allowances.services: {', '.join(sorted(allowed))})")
    check_enable(loaded, slug, service_name, settings)
    return loaded.registry.coop


def file_request(root: Path, slug: str, service_name: str, settings: Mapping[str, Any],
                 filed_by: str, loaded: Loaded | None = None) -> Request:
    """File a request (validated as an approval would be); return it.

    `loaded`: the co-op as the command read it already (else it is read here).
    """
    if len(settings) > MAX_SETTINGS:
        raise UsageError(f"at most {MAX_SETTINGS} settings in one request")
    coop = check_allowed(loaded or root, slug, service_name, settings)
    ceiling = coop.allowances["open_requests"]
    with coop_lock(root, purpose=f"request {slug} {service_name}", name=REQUESTS_LOCK,
                   wait=10.0):
        _tidy(root, slug)
        pending = load_requests(root, slug, closed=False)
        same = [r for r in pending if r.service == service_name]
        if same:
            raise UsageError(f"request {same[0].id} for {service_name} is still pending",
                             hint=f"cancel it first (cancel {same[0].id})")
        if len(pending) >= ceiling:
            raise UsageError(f"{slug} already has {len(pending)} open requests, the most the "
                             f"co-op allows (coop.yml allowances.open_requests: {ceiling})",
                             hint="wait for a decision, or cancel one (cancel ID)")
        when = now()
        request = Request(id=_next_id(root), member=slug,
                          service=service_name, settings=dict(settings), state="pending",
                          filed=when, filed_by=filed_by,
                          history=[{"at": when, "by": filed_by, "action": "filed"}])
        _save(root, request)
        audit(root, {"by": filed_by, "action": "request filed", "request": request.id,
                     "member": slug, "service": service_name, "settings": dict(settings)})
    return request


def _decide(root: Path, request_id: int, by: str, action: str, state: str, why: str,
            member: str | None = None) -> Request:
    path = _locate(root, request_id)
    if path is None:
        raise UsageError(f"no request {request_id}", hint="`coophost requests list` shows them")
    request, raw = _read(root, path)
    if member is not None and request.member != member:
        raise UsageError(f"no request {request_id}")  # another member's: not even its existence
    if request.state != "pending":
        raise UsageError(f"request {request_id} is {request.state}, not pending")
    request.state = state
    if why:
        request.why = why
    request.history.append({"at": now(), "by": by, "action": action,
                            **({"why": why} if why else {})})
    _save(root, request, path, raw)
    audit(root, {"by": by, "action": f"request {action}", "request": request_id,
                 "member": request.member, "service": request.service,
                 **({"why": why} if why else {})})
    return request


def cancel_request(root: Path, request_id: int, slug: str, by: str) -> Request:
    """A member withdraws its own pending request."""
    with coop_lock(root, purpose=f"cancel {request_id}", name=REQUESTS_LOCK, wait=10.0):
        _tidy(root, slug)
        return _decide(root, request_id, by, "canceled", "canceled", "", member=slug)


def deny_request(root: Path, request_id: int, by: str, why: str) -> Request:
    """A sysadmin refuses a pending request, saying why."""
    why = checks.text(why, "(command line)", "--why", MAX_WHY)
    if not why.strip():
        raise UsageError("--why: say why the request is denied")
    with coop_lock(root, purpose=f"deny {request_id}", name=REQUESTS_LOCK, wait=10.0):
        _tidy(root)
        return _decide(root, request_id, by, "denied", "denied", why)


def approve_request(root: Path, request_id: int, by: str, why: str = "") -> tuple[Request, str]:
    """A sysadmin approves: re-check, update the member file (placing the unit), record it.

    Returns the request and the host the unit is placed on. Takes the co-op lock (it writes
    a member file) and then the requests lock.
    """
    from coophost.registry.edit import draft_enable, enable_service
    from coophost.registry.loader import load_registry, with_hosts
    from coophost.registry.placement import place_unit

    with coop_lock(root, purpose=f"approve {request_id}"), \
            coop_lock(root, purpose=f"approve {request_id}", name=REQUESTS_LOCK, wait=10.0):
        _tidy(root)
        request = get_request(root, request_id)
        if request.state != "pending":
            raise UsageError(f"request {request_id} is {request.state}, not pending")
        slug, name, settings = request.member, request.service, request.settings
        loaded = load_registry(root, need_hosts=False)
        check_allowed(loaded, slug, name, settings)
        draft = draft_enable(loaded, slug, name, settings)
        host = draft.member.placement.get(name)  # sticky: a placed unit stays there
        if host is None:
            host = place_unit(with_hosts(loaded), loaded.catalogue, draft.member, name)
        _, host = enable_service(root, loaded, draft, name, host)
        return _decide(root, request_id, by, "approved", "approved", why), host


def shown_state(request: Request, deployed: Sequence[tuple[str, str]]) -> str:
    """The state to show: `deployed` for an approved request whose unit is applied."""
    if request.state == "approved" and (request.member, request.service) in deployed:
        return "deployed"
    return request.state


def unit_states(coop: Path | Loaded) -> dict[tuple[str, str], tuple[str, bool]]:
    """(member, service) -> (host, deployed): deployed when the applied hash matches.

    `coop`: the co-op's folder, or the co-op as the command read it (not read again).
    """
    from coophost.desired.units import compute
    from coophost.state import StateDB

    desired = compute(coop)
    root = coop.registry.root if isinstance(coop, Loaded) else coop
    with StateDB(root) as db:
        applied = db.applied()
    return {key: (unit.host, applied.units.get((unit.host, *key)) == unit.hash)
            for key, unit in desired.units.items()}


def deployed_units(root: Path) -> list[tuple[str, str]]:
    """(member, service) units whose applied hash matches the registry's (nothing pending)."""
    return [key for key, (_, deployed) in unit_states(root).items() if deployed]
