"""Writes to the registry: each one validated as a whole, atomic, and comment-keeping.

These functions decide nothing and take no lock: their caller holds the co-op lock
(`coophost.lock.coop_lock`) around reading the co-op once, deciding (where a unit goes:
`registry.placement`) and writing, and hands them the co-op it read (`Loaded`) and what it
decided. Each one refuses to run without that lock (LockNotHeld).

Every operation reads the file as a ruamel.yaml round-trip document, changes it, checks the
result exactly as a load would (the member alone, then across the whole co-op), and only then
replaces the file atomically. A rejected change writes nothing. Just before the rename the file
is compared with the bytes that were read: a change saved meanwhile (by a person's editor, a
checkout, a command not taking the lock) is never overwritten; the write is refused (exit 3).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from coophost.errors import ConfigError, ConflictError, UsageError
from coophost.fsutil import read_regular, replace_if_unchanged
from coophost.layout import HOSTS_FILE, MEMBERS_DIR, REMOVED_DIR
from coophost.lock import require_held
from coophost.registry import checks
from coophost.registry.catalogue import Catalogue, Service
from coophost.registry.loader import Loaded
from coophost.registry.model import Member, Registry
from coophost.registry.parse import cross_check, parse_hosts, parse_member
from coophost.registry.yamlio import MAX_FILE_BYTES, load_bytes, load_text, quote, rt_dump, rt_load

MEMBER_TEMPLATE = """\
# Member {slug}: one file per member. coophost checks every change before saving it;
# `coophost member edit {slug}` opens it in $EDITOR and refuses an invalid result.
slug: {slug}
# This member's life at the co-op: its data on hosts and its secrets belong to it. Written by
# coophost, never reused: a later member given the same slug gets a new one.
id: "{life}"
name: {name}
contact: {contact}
status: active          # active | suspended
domains: {domains}
ssh_keys: {ssh_keys}
# Enabled services and their settings (`coophost service list` shows every parameter).
services: {{}}
# Which host runs each service. Written by coophost and sticky: a unit never moves by
# itself; `coophost member move {slug} SERVICE HOST` moves one.
placement: {{}}
"""


RERUN = "nothing of this command was saved; check the file, then run the command again"


def member_path(root: Path, slug: str) -> Path:
    """members/<slug>.yml, after checking the slug (so no path ever escapes members/)."""
    checks.slug(slug, "(command line)", "member")
    return root / MEMBERS_DIR / f"{slug}.yml"


def _flow_list(values: list[str]) -> str:
    return "[" + ", ".join(quote(v) for v in values) + "]" if values else "[]"


def _check_member_text(loaded: Loaded, slug: str, text: str) -> Member:
    """Validate new text for members/<slug>.yml as a load would, alone and across the co-op."""
    label = f"{MEMBERS_DIR}/{slug}.yml"
    registry = loaded.registry
    member = parse_member(load_text(text, label), label, slug, registry.coop, loaded.catalogue)
    members = dict(registry.members)
    members[slug] = member
    checked = Registry(registry.root, registry.coop, registry.hosts, members)
    if registry.hosts:
        cross_check(checked, loaded.catalogue)
    else:
        cross_check(Registry(registry.root, registry.coop, {}, {
            s: replace(m, placement={}) for s, m in members.items()}), loaded.catalogue)
    return member


def add_member(root: Path, loaded: Loaded, slug: str, name: str, contact: str,
               domains: list[str], ssh_keys: list[str]) -> Path:
    """Create members/<slug>.yml (`loaded`: the co-op read under the caller's lock)."""
    path = member_path(root, slug)
    require_held(root, "add_member")
    if path.exists():
        raise UsageError(f"member {slug!r} already exists ({MEMBERS_DIR}/{slug}.yml)")
    text = MEMBER_TEMPLATE.format(slug=slug, life=new_life(), name=quote(name),
                                  contact=quote(contact),
                                  domains=_flow_list(domains),
                                  ssh_keys=_flow_list(ssh_keys))
    _check_member_text(loaded, slug, text)
    write_member(root, slug, text, None)
    return path


def read_member_bytes(root: Path, slug: str) -> bytes:
    """Return the current bytes of a member's file (read safely: a regular file, bounded)."""
    path = member_path(root, slug)
    try:
        return read_regular(path, f"{MEMBERS_DIR}/{slug}.yml", MAX_FILE_BYTES)
    except FileNotFoundError:
        raise checks.no_member(slug, (p.stem for p in (root / MEMBERS_DIR).glob("*.yml"))
                               ) from None


def read_member_text(root: Path, slug: str) -> str:
    """Return the current text of a member's file."""
    return _decoded(read_member_bytes(root, slug), slug)


def _decoded(raw: bytes, slug: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        load_bytes(raw, f"{MEMBERS_DIR}/{slug}.yml")  # raises the named "not UTF-8" error
        raise


def write_member(root: Path, slug: str, text: str, expect: bytes | None,
                 hint: str = RERUN) -> None:
    """Replace members/<slug>.yml with `text` if it still holds `expect` (None: absent)."""
    replace_if_unchanged(member_path(root, slug), text, expect, f"{MEMBERS_DIR}/{slug}.yml",
                         limit=MAX_FILE_BYTES, hint=hint)


def replace_member_text(root: Path, loaded: Loaded, slug: str, text: str,
                        original: str) -> Member:
    """Replace a member's file with `text` after validating it (used by `member edit`).

    `original` is the text the editor started from: if the file no longer holds it (a
    suspension, an approval, a deploy's placement saved meanwhile), nothing is written and
    ConflictError (exit 3) says so.
    """
    require_held(root, "replace_member_text")
    expect = original.encode("utf-8")
    if read_member_bytes(root, slug) != expect:
        raise ConflictError(f"{MEMBERS_DIR}/{slug}.yml was changed while the editor was "
                            "open (by another command or person); nothing was saved")
    member = _check_member_text(loaded, slug, text)
    write_member(root, slug, text, expect)
    return member


def update_member(root: Path, loaded: Loaded, slug: str, change: Callable[[Any], None]
                  ) -> Member:
    """Apply `change` to the round-trip document of a member file; validate; write.

    `loaded` is the co-op as the caller read it under the lock it holds; `change` only
    writes into the document what the caller decided.
    """
    require_held(root, "update_member")
    raw = read_member_bytes(root, slug)
    doc = rt_load(_decoded(raw, slug))
    change(doc)
    return _write_doc(root, loaded, slug, doc, raw)


def _write_doc(root: Path, loaded: Loaded, slug: str, doc: Any, raw: bytes) -> Member:
    """Validate a changed member document as a load would; write it if the file holds `raw`."""
    text = rt_dump(doc)
    member = _check_member_text(loaded, slug, text)
    write_member(root, slug, text, raw)
    return member


def _block_map(doc: Any, key: str) -> Any:
    """doc[key] as a block-style mapping (created when missing or empty)."""
    from ruamel.yaml.comments import CommentedMap

    current = doc.get(key)
    if not isinstance(current, CommentedMap) or not current:
        fresh = CommentedMap(current or {})
        fresh.fa.set_block_style()
        doc[key] = fresh
    return doc[key]


def _seq(doc: Any, key: str) -> Any:
    from ruamel.yaml.comments import CommentedSeq

    current = doc.get(key)
    if not isinstance(current, CommentedSeq):
        doc[key] = CommentedSeq(current or [])
    doc[key].fa.set_block_style()
    return doc[key]


def edit_fields(root: Path, loaded: Loaded, slug: str, *, name: str | None = None,
                contact: str | None = None, add_domains: tuple[str, ...] = (),
                remove_domains: tuple[str, ...] = (),
                add_keys: tuple[str, ...] = (), remove_keys: tuple[str, ...] = ()) -> Member:
    """Change a member's top-level fields."""
    def change(doc: Any) -> None:
        if name is not None:
            doc["name"] = name
        if contact is not None:
            doc["contact"] = contact
        for key, adds, removes in (("domains", add_domains, remove_domains),
                                   ("ssh_keys", add_keys, remove_keys)):
            if not adds and not removes:
                continue
            seq = _seq(doc, key)
            for value in removes:
                if value not in seq:
                    raise UsageError(f"{slug} has no {key[:-1].replace('_', ' ')} {value!r}")
                seq.remove(value)
            seq.extend(v for v in adds if v not in seq)
    return update_member(root, loaded, slug, change)


def set_status(root: Path, loaded: Loaded, slug: str, status: str) -> Member:
    """Suspend or resume a member."""
    def change(doc: Any) -> None:
        doc["status"] = status
    return update_member(root, loaded, slug, change)


def new_life() -> str:
    """A new member life id: 12 random hex digits."""
    import secrets

    return secrets.token_hex(6)


def assign_lives(root: Path, loaded: Loaded) -> list[Path]:
    """Give every member file without an `id` one (the caller holds the co-op lock).

    `loaded` is the co-op as the caller read it under that lock; a file changed since is
    never overwritten (ConflictError, exit 3).

    A member without one is a member from before lives existed: its secrets file
    (secrets/<slug>.yml) becomes its life's (secrets/<slug>.<id>.yml), and its mail on the
    hosts moves under its life at the next deploy.
    """
    from coophost.layout import SECRETS_DIR

    require_held(root, "assign_lives")
    written = []
    for slug, member in sorted(loaded.registry.members.items()):
        if member.life:
            continue
        raw = read_member_bytes(root, slug)
        doc = rt_load(_decoded(raw, slug))
        life = new_life()
        keys = list(doc)
        doc.insert(keys.index("slug") + 1 if "slug" in keys else 0, "id",
                   DoubleQuotedScalarString(life))  # quoted: 12e4... would read as a number
        # The secrets are linked to their new name before the file names the life, and the
        # old name goes last: an interruption anywhere leaves the member with its secrets.
        legacy = root / SECRETS_DIR / f"{slug}.yml"
        if legacy.is_file():
            os.link(legacy, root / SECRETS_DIR / f"{slug}.{life}.yml")
        write_member(root, slug, rt_dump(doc), raw,
                     hint="nothing was deployed; run the command again")
        if legacy.is_file():
            legacy.unlink()
        written.append(member_path(root, slug))
    return written


def remove_member(root: Path, slug: str) -> Path | None:
    """Delete a member's file; its secrets file goes to secrets/removed/ (returned).

    The caller holds the co-op lock.

    Its services go at the next deploy, which moves their data on the hosts into the co-op's
    archive; `coophost members purge` deletes both after the retention period.
    """
    import datetime as dt

    from ruamel.yaml.error import YAMLError

    from coophost.layout import SECRETS_DIR
    from coophost.registry.parse import LIFE_RE

    path = member_path(root, slug)
    require_held(root, "remove_member")
    try:  # the life id only: a file broken elsewhere can still be removed
        life = rt_load(read_member_text(root, slug)).get("id")
    except (ConfigError, AttributeError, YAMLError):
        life = None
    owner = f"{slug}.{life}" if isinstance(life, str) and LIFE_RE.fullmatch(life) else slug
    secrets_file = root / SECRETS_DIR / f"{owner}.yml"
    kept = None
    if secrets_file.is_file():
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        kept = root / SECRETS_DIR / REMOVED_DIR / f"{owner}.{stamp}.yml"
        kept.parent.mkdir(mode=0o700, exist_ok=True)
        os.replace(secrets_file, kept)
    path.unlink()
    for folder in {path.parent, *([kept.parent] if kept else [])}:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return kept


def parse_setting(service: Service, assignment: str) -> tuple[str, Any]:
    """`key=value` from the command line, typed by the service's parameter."""
    key, sep, raw = assignment.partition("=")
    if not sep:
        raise UsageError(f"--set {assignment!r}: expected key=value")
    checks.refuse_unknown_keys({key: None}, service.parameters, "(command line)",
                               f"--set {service.name}")
    kind = service.parameters[key].type
    if kind in ("text", "email", "vhost", "choice") or (kind == "member_domains"
                                                        and raw == "all"):
        return key, raw
    return key, load_text(raw, "(command line)")


def _set_settings(doc: Any, service_name: str, settings: Mapping[str, Any]) -> None:
    """Write `settings` into the member document's block for `service_name` (made if new)."""
    from ruamel.yaml.comments import CommentedMap

    services = _block_map(doc, "services")
    current = services.get(service_name)
    if not isinstance(current, CommentedMap):
        current = CommentedMap()
        services[service_name] = current
    current.fa.set_block_style()
    for key, value in settings.items():
        current[key] = value


def check_enable(loaded: Loaded, slug: str, service_name: str,
                 settings: Mapping[str, Any]) -> Member:
    """Validate the member file as `enable_service` would write it; write nothing."""
    doc = rt_load(read_member_text(loaded.registry.root, slug))
    _set_settings(doc, service_name, settings)
    return _check_member_text(loaded, slug, rt_dump(doc))


@dataclass
class Draft:
    """A member file read once and changed in memory, for its caller to decide on and write.

    `raw` is what was read (the write compares the file with it), `doc` the changed
    round-trip document, `member` that document parsed alone (not yet checked across the
    co-op): what the caller's decision (where a new unit goes) rests on.
    """

    slug: str
    raw: bytes
    doc: Any
    member: Member


def draft_enable(loaded: Loaded, slug: str, service_name: str,
                 settings: Mapping[str, Any]) -> Draft:
    """The member file with `service_name` enabled with `settings`, not written yet."""
    loaded.catalogue.get(service_name, "(command line)", "service")
    raw = read_member_bytes(loaded.registry.root, slug)
    doc = rt_load(_decoded(raw, slug))
    _set_settings(doc, service_name, settings)
    label = f"{MEMBERS_DIR}/{slug}.yml"
    member = parse_member(load_text(rt_dump(doc), label), label, slug, loaded.registry.coop,
                          loaded.catalogue)
    return Draft(slug, raw, doc, member)


def enable_service(root: Path, loaded: Loaded, draft: Draft, service_name: str,
                   host: str) -> tuple[Member, str]:
    """Write an enabled (or reconfigured) service; record `host` if it is not placed yet.

    `draft` comes from `draft_enable`; the caller decided `host` from `draft.member`
    (`registry.placement.place_unit`). Returns the member and the host its unit is
    recorded on. A file changed since the draft read it is not overwritten (exit 3).
    """
    require_held(root, "enable_service")
    placement = _block_map(draft.doc, "placement")
    if service_name not in placement:
        placement[service_name] = host
    recorded = str(placement[service_name])
    return _write_doc(root, loaded, draft.slug, draft.doc, draft.raw), recorded


def disable_service(root: Path, loaded: Loaded, slug: str, service_name: str) -> Member:
    """Disable a member's service (its unit is removed at the next deploy)."""
    def change(doc: Any) -> None:
        services = doc.get("services") or {}
        if service_name not in services:
            raise UsageError(f"{slug} does not have {service_name!r} enabled")
        del services[service_name]
        placement = doc.get("placement") or {}
        if service_name in placement:
            del placement[service_name]
        moved = doc.get("moved") or {}
        if service_name in moved:
            del moved[service_name]
        if "moved" in doc and not moved:
            del doc["moved"]
    return update_member(root, loaded, slug, change)


def move_unit(root: Path, loaded: Loaded, slug: str, service_name: str, host_name: str,
              moved_from: str | None = None, on: str = "") -> Member:
    """Record that a member's service now runs on `host_name`.

    The caller checked the move (`registry.placement.check_move`: group and room).
    `moved_from`: the host the unit leaves, recorded under `moved:` with the date `on`: it
    relays the unit's mail to the new host until `members purge` drops the record.
    """
    def change(doc: Any) -> None:
        _block_map(doc, "placement")[service_name] = host_name
        moved = doc.get("moved")
        if moved_from is not None:
            from ruamel.yaml.comments import CommentedMap

            record = CommentedMap()
            record["from"] = moved_from
            record["on"] = on
            _block_map(doc, "moved")[service_name] = record
        elif moved is not None and service_name in moved:
            del moved[service_name]
            if not moved:
                del doc["moved"]
    return update_member(root, loaded, slug, change)


def drop_moves(root: Path, loaded: Loaded, slug: str, services: list[str]) -> Member:
    """Forget the moves of these services (their old hosts stop relaying)."""
    def change(doc: Any) -> None:
        moved = doc.get("moved") or {}
        for name in services:
            if name in moved:
                del moved[name]
        if "moved" in doc and not moved:
            del doc["moved"]
    return update_member(root, loaded, slug, change)


# ---- hosts.yml -----------------------------------------------------------------------------

def _update_hosts(root: Path, loaded: Loaded, change: Callable[[Any], None]) -> None:
    require_held(root, "a hosts.yml write")
    path = root / HOSTS_FILE
    try:
        raw: bytes | None = read_regular(path, HOSTS_FILE, MAX_FILE_BYTES)
    except FileNotFoundError:
        raw = None
    text = (raw.decode("utf-8") if raw is not None
            else "all:\n  hosts: {}\n  children: {}\n")
    doc = rt_load(text)
    change(doc)
    new_text = rt_dump(doc)
    hosts = parse_hosts(load_text(new_text, HOSTS_FILE), HOSTS_FILE, loaded.catalogue)
    cross_check(replace(loaded.registry, hosts=hosts), loaded.catalogue)
    replace_if_unchanged(path, new_text, raw, HOSTS_FILE, limit=MAX_FILE_BYTES, hint=RERUN)


def check_new_host(catalogue: Catalogue, name: str, groups: tuple[str, ...]) -> None:
    """Refuse (exit 2) a host name or service group `host add` cannot write."""
    checks.host_name(name, "(command line)", "host")
    known_groups = sorted({s.group for s in catalogue.services.values()})
    for group in groups:
        checks.refuse_unknown_keys({group: None}, known_groups, "(command line)", "--group")


def add_host(root: Path, loaded: Loaded, name: str, *, address: str, port: int, fqdn: str | None,
             ram_mb: int, disk_gb: int, groups: tuple[str, ...]) -> None:
    """Add a host with its connection facts, capacity and service groups to hosts.yml."""
    from ruamel.yaml.comments import CommentedMap

    check_new_host(loaded.catalogue, name, groups)

    def change(doc: Any) -> None:
        everything = _block_map(doc, "all")
        hosts = _block_map(everything, "hosts")
        if name in hosts or any(name in (g.get("hosts") or {})
                                for g in (everything.get("children") or {}).values()):
            raise UsageError(f"host {name!r} is already in hosts.yml")
        entry = CommentedMap()
        entry["ansible_host"] = address
        if port != 22:
            entry["ansible_port"] = port
        if fqdn:
            entry["coophost_fqdn"] = fqdn
        capacity = CommentedMap([("ram_mb", ram_mb), ("disk_gb", disk_gb)])
        capacity.fa.set_flow_style()
        entry["coophost_capacity"] = capacity
        hosts[name] = entry
        children = _block_map(everything, "children")
        for group in groups:
            if group not in children or children[group] is None:
                children[group] = CommentedMap()
            members = _block_map(children[group], "hosts")
            members[name] = None

    _update_hosts(root, loaded, change)


def remove_host(root: Path, loaded: Loaded, name: str, applied_units: int = 0) -> None:
    """Remove a host from hosts.yml; refused while units are placed on it or applied there."""
    def change(doc: Any) -> None:
        placed = sorted(f"{m.slug}/{s}" for m in loaded.registry.members.values()
                        for s, h in m.placement.items() if h == name)
        if placed:
            raise UsageError(f"host {name!r} still runs {len(placed)} unit(s): "
                             f"{', '.join(placed[:5])}", hint="move them first with "
                             "`coophost member move MEMBER SERVICE HOST`")
        if applied_units:
            raise UsageError(f"state.db still records {applied_units} unit(s) applied on "
                             f"{name!r}", hint="deploy the moves first")
        everything = doc.get("all") or {}
        found = False
        known = set(everything.get("hosts") or {})
        if name in (everything.get("hosts") or {}):
            del everything["hosts"][name]
            found = True
        for group in (everything.get("children") or {}).values():
            members = (group or {}).get("hosts") or {}
            known.update(members)
            if name in members:
                del members[name]
                found = True
        if not found:
            raise checks.no_host(name, sorted(known))

    _update_hosts(root, loaded, change)


def record_placements(root: Path, placements: Mapping[tuple[str, str], str]) -> list[Path]:
    """Write newly decided placements into member files, keeping existing ones.

    The caller holds the co-op lock (a deploy records where new units went before applying
    them, so a later host added to hosts.yml never moves them).
    """
    require_held(root, "record_placements")
    by_member: dict[str, dict[str, str]] = {}
    for (slug, service_name), host in sorted(placements.items()):
        by_member.setdefault(slug, {})[service_name] = host
    written = []
    for slug, services in by_member.items():
        raw = read_member_bytes(root, slug)
        doc = rt_load(_decoded(raw, slug))
        placement = _block_map(doc, "placement")
        for service_name, host in services.items():
            if service_name not in placement:
                placement[service_name] = host
        write_member(root, slug, rt_dump(doc), raw,
                     hint="the deploy stopped before applying anything; run it again")
        written.append(member_path(root, slug))
    return written
