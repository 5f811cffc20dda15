"""Load a co-op directory: read, validate and cross-check, reusing the parse cache."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coophost import __version__
from coophost.errors import ConfigError, ValidationError
from coophost.fsutil import read_regular
from coophost.layout import COOP_FILE, HOSTS_FILE, MEMBERS_DIR, STATE_DIR
from coophost.registry import checks
from coophost.registry.cache import ParseCache, stat_array
from coophost.registry.catalogue import Catalogue, load_catalogue
from coophost.registry.model import (
    Coop,
    Host,
    Member,
    Registry,
)
from coophost.registry.parse import (
    cross_check,
    parse_coop,
    parse_inventory,
    parse_member,
)
from coophost.registry.workers import Worker
from coophost.registry.yamlio import MAX_FILE_BYTES, load_bytes

RECORDS_CACHE = "cache/members.marshal"
# Set by the member shell to the speaking member's slug: other members' files that cannot be
# read or do not validate are then left out of the load (one member's broken file must not
# shut every other member out), and no cache is saved from such a partial load.
_SPARING: ContextVar[str | None] = ContextVar("coophost_sparing", default=None)


@contextlib.contextmanager
def skipping_others_broken_files(slug: str) -> Iterator[None]:
    """Within the block, loads leave out other members' unreadable or invalid files."""
    token = _SPARING.set(slug)
    try:
        yield
    finally:
        _SPARING.reset(token)


@dataclass
class Loaded:
    """A loaded registry and its catalogue: the co-op as one command read it.

    `base` is what the members were checked against (coop.yml, hosts.yml, the catalogue) and
    `digests` the SHA-256 of the bytes each member file's record came from (by file name), so
    a computation over the same co-op (`desired.units.compute`) reuses these records for the
    files that still hold those bytes instead of parsing them again.
    """

    registry: Registry
    catalogue: Catalogue
    base: Base | None = None
    digests: dict[str, bytes] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        """The co-op directory."""
        return self.registry.root

    def known(self) -> dict[str, tuple[bytes, Member]]:
        """Each member file's record with the digest of the bytes it came from, by file name."""
        return {f"{m.slug}.yml": (self.digests[f"{m.slug}.yml"], m)
                for m in self.registry.members.values() if f"{m.slug}.yml" in self.digests}


@dataclass
class Base:
    """What every member file is checked against: the catalogue, coop.yml and hosts.yml."""

    root: Path
    catalogue: Catalogue
    coop: Coop
    hosts: dict[str, Host]
    digest: str  # of what a member record depends on: code version, catalogue, coop.yml
    hosts_digest: str = ""  # of hosts.yml's bytes ("" when there is none)
    workers: list[Worker] = field(default_factory=list)  # hosts.yml's execution nodes

    def fingerprint(self, salt: str = "") -> str:
        """Return the cache fingerprint for derived data that also depends on `salt`."""
        return hashlib.sha256(f"{self.digest}\0{salt}".encode()).hexdigest()


def _read(root: Path, name: str) -> bytes:
    try:
        return read_regular(root / name, name, MAX_FILE_BYTES)
    except FileNotFoundError:
        hint = ("run `coophost lab up` to create the lab's hosts" if name == HOSTS_FILE
                else "run `coophost init DIR` to create a co-op directory")
        error = ConfigError(f"{root / name}: no such file", hint=hint)
        error.file = name  # type: ignore[attr-defined]  # the member shell hides co-op files
        raise error from None


def load_coop(root: Path, catalogue: Catalogue | None = None) -> tuple[Coop, bytes]:
    """Return coop.yml, validated, and its bytes."""
    raw = _read(root, COOP_FILE)
    return parse_coop(load_bytes(raw, COOP_FILE), COOP_FILE,
                      catalogue or load_catalogue()), raw


def load_hosts(root: Path, catalogue: Catalogue | None = None) -> dict[str, Host]:
    """Return hosts.yml, validated: every host with its groups and declared capacity."""
    return _load_hosts(root, catalogue)[0]


def load_workers(root: Path, catalogue: Catalogue | None = None) -> list[Worker]:
    """Return the execution nodes of hosts.yml, validated (coophost.registry.workers)."""
    return _load_hosts(root, catalogue)[1]


def _load_hosts(root: Path, catalogue: Catalogue | None = None
                ) -> tuple[dict[str, Host], list[Worker], bytes]:
    """hosts.yml's service hosts and its workers, from one read and one parse."""
    raw = _read(root, HOSTS_FILE)
    hosts, workers = parse_inventory(load_bytes(raw, HOSTS_FILE), HOSTS_FILE,
                                     catalogue or load_catalogue())
    return {name: _in_inventory(host, root) for name, host in hosts.items()}, workers, raw


def _in_inventory(host: Host, root: Path) -> Host:
    """`host` with `{{ inventory_dir }}` in its SSH key file's path made this co-op's folder."""
    from dataclasses import replace

    entry = host.connection
    if entry is None or not entry.key_file or "{{ inventory_dir }}" not in entry.key_file:
        return host
    key_file = entry.key_file.replace("{{ inventory_dir }}", str(root.resolve()))
    return replace(host, connection=replace(entry, key_file=key_file))


def load_base(root: Path, *, need_hosts: bool = True) -> Base:
    """Read the catalogue, coop.yml and (when needed or present) hosts.yml."""
    if not os.path.lexists(root / COOP_FILE):  # an odd coop.yml is refused when read
        raise ConfigError(f"{root}: not a co-op directory (no {COOP_FILE})",
                          hint="pass -i/--inventory, run coophost inside a co-op directory, "
                               "or make one with `coophost init DIR`")
    catalogue = load_catalogue()
    errors = checks.Collector()  # the problems of coop.yml and of hosts.yml, reported together
    coop: Coop | None = None
    coop_raw = b""
    with errors.check():
        coop, coop_raw = load_coop(root, catalogue)
    hosts: dict[str, Host] = {}
    workers: list[Worker] = []
    hosts_digest = ""
    if need_hosts or (root / HOSTS_FILE).is_file():
        try:
            hosts, workers, hosts_raw = _load_hosts(root, catalogue)
        except ValidationError as exc:
            errors.errors.extend(exc.errors)
        except ConfigError:
            errors.done()  # coop.yml's problems first, then why hosts.yml could not be read
            raise
        else:
            hosts_digest = hashlib.sha256(hosts_raw).hexdigest()
    errors.done()
    assert coop is not None
    digest = hashlib.sha256(b"\0".join([
        __version__.encode(), catalogue.digest.encode(), hashlib.sha256(coop_raw).digest(),
    ])).hexdigest()
    return Base(root=root, catalogue=catalogue, coop=coop, hosts=hosts, digest=digest,
                hosts_digest=hosts_digest, workers=workers)


class MemberFiles:
    """The member files of a co-op directory, in file-name order, each with its stat result."""

    def __init__(self, root: Path) -> None:
        try:
            found = sorted(os.scandir(root / MEMBERS_DIR), key=lambda e: e.name)
        except FileNotFoundError:
            found = []
        self.entries = [e for e in found if not e.name.startswith(".") and e.name.endswith(".yml")]
        self.names = [e.name for e in self.entries]
        # lstat: a symlink is seen as itself (and refused when read), never followed
        self.stat_results = [e.stat(follow_symlinks=False) for e in self.entries]
        self.stats = stat_array(self.stat_results)
        self.newest_ns = max((s.st_mtime_ns for s in self.stat_results), default=0)

    def unchanged_in(self, cache: ParseCache) -> bool:
        """Whether `cache` holds every one of these files, as they are now (and no others)."""
        return cache.unchanged(self.names, self.stats, self.newest_ns)


def scan_members(base: Base, cache: ParseCache, build: Callable[[Member], Any],
                 files: MemberFiles | None = None,
                 known: Mapping[str, tuple[bytes, Member]] | None = None) -> list[Any]:
    """Return `build(member)` for every member file, in file-name order, reusing the cache.

    A file whose mtime and size (or, failing that, content hash) match its cache entry is not
    parsed again; its cached record is returned instead. `files` is the directory's listing
    when the caller already took it. `known` holds records this command already parsed
    (`Loaded.known()`): a file still holding the bytes one came from is built from it.
    """
    files = files or MemberFiles(base.root)
    if files.unchanged_in(cache):
        cached = cache.records()
        if len(cached) == len(files.names):  # else the records were unreadable: read the files
            return cached
    records = []
    sparing = _SPARING.get()
    errors = checks.Collector()  # every invalid file's problems, reported together
    for entry, stat in zip(files.entries, files.stat_results, strict=True):
        try:
            record = _record(base, cache, build, entry, stat, known or {})
        except ConfigError as exc:
            if sparing is None or entry.name == f"{sparing}.yml":
                if not isinstance(exc, ValidationError):
                    errors.done()  # the problems found so far first
                    raise
                errors.errors.extend(exc.errors)
                continue
            cache.path = None  # a partial load: never saved as the co-op's cache
            continue
        records.append(record)
    errors.done()
    cache.forget_except(set(files.names))
    return records


def _record(base: Base, cache: ParseCache, build: Callable[[Member], Any],
            entry: os.DirEntry[str], stat: os.stat_result,
            known: Mapping[str, tuple[bytes, Member]]) -> Any:
    """One member file's record: from the cache, or read (safely), validated and built."""
    record = cache.lookup(entry.name, stat)
    if record is None:
        label = f"{MEMBERS_DIR}/{entry.name}"
        raw = read_regular(Path(entry.path), label, MAX_FILE_BYTES)
        record = cache.lookup_content(entry.name, stat, raw)
        if record is None:
            digest, member = known.get(entry.name, (b"", None))
            if member is None or digest != hashlib.sha256(raw).digest():
                member = parse_member(load_bytes(raw, label), label, entry.name[:-4],
                                      base.coop, base.catalogue)
            record = build(member)
            cache.store(entry.name, stat, raw, record)
    return record


def load_registry(root: Path, *, need_hosts: bool = True, use_cache: bool = True,
                  base: Base | None = None) -> Loaded:
    """Read and check the whole co-op directory at `root` (every member record).

    `base`: coop.yml, hosts.yml and the catalogue when the caller read them already.
    """
    base = base or load_base(root, need_hosts=need_hosts)
    cache = ParseCache(root / STATE_DIR / RECORDS_CACHE if use_cache else None,
                       base.fingerprint("records"))
    files = MemberFiles(root)
    members = {m.slug: m for m in map(Member.from_plain,
                                      scan_members(base, cache, Member.to_plain, files))}
    entries = cache.entries
    digests = {name: entries[name][2] for name in files.names if name in entries}
    cache.save()
    sparing = _SPARING.get()
    while True:
        registry = Registry(root=root, coop=base.coop, hosts=base.hosts, members=members)
        try:
            if base.hosts or need_hosts:
                cross_check(registry, base.catalogue)
            else:
                cross_check(Registry(root, base.coop, {}, {
                    slug: _without_placement(m) for slug, m in members.items()}),
                    base.catalogue)
        except ConfigError as exc:
            # In the member shell, a conflict that another member's file causes (two other
            # members claiming one name, by a hand edit) leaves that file out, not everyone.
            others = {_other_member(str(getattr(one, "file", "")))
                      for one in getattr(exc, "errors", [exc])}
            others = {slug for slug in others if slug not in ("", sparing) and slug in members}
            if sparing is None or not others:
                raise
            members = {slug: m for slug, m in members.items() if slug not in others}
            continue
        return Loaded(registry=registry, catalogue=base.catalogue, base=base, digests=digests)


def _other_member(file: str) -> str:
    """The slug of the member file `file` names (members/<slug>.yml), else ""."""
    return file[len(MEMBERS_DIR) + 1:-4] if file.startswith(f"{MEMBERS_DIR}/") else ""


def with_hosts(loaded: Loaded) -> Registry:
    """The co-op as `loaded` read it, with hosts.yml (read now if the load skipped it)."""
    if loaded.registry.hosts:
        return loaded.registry
    from dataclasses import replace

    return replace(loaded.registry, hosts=load_hosts(loaded.registry.root, loaded.catalogue))


def _without_placement(member: Member) -> Member:
    from dataclasses import replace

    return replace(member, placement={})
