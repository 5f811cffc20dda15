"""Data takeout: one archive of everything a member has on every host, streamed.

For each of the member's services, the catalogue's `data.paths` (filled with the unit's
domains, the member's slug and its owner key `<slug>.<life>`) are looked for on every host of
the co-op (data stays behind on a host a unit moved away from, and lands in the host's archive
when a unit leaves it: `data.archive`, entries named `<owner>.<time>`), and read by
`tar --create --hard-dereference` over SSH (host key pinned, run with sudo): a file with
several hard links (Dovecot's IMAP copies) arrives whole under each of its names. Each file is
copied from that stream into the archive while its SHA-256 is computed.

An export is complete or it fails: a unit deployed on its host (state.db) whose data is not
found there, a file the stream cannot carry, or a tar that fails, is an error (exit 1), so
`member depart` never keeps an incomplete takeout. Neither the hosts nor the controller write
a second copy: the only copy made is the archive itself. MANIFEST.json (member, sources, every
file with size and checksum) and SHA256SUMS (`sha256sum -c` checks an extracted archive) close
the archive.

Inside the archive, files sit under `<service>/<host>/<path on the host>`. A service whose
catalogue entry has `data.export` (a command on the host writing a tar stream: git bundles
one bundle per repository) adds what that command writes under `<service>/<host>/export/`,
for each unit deployed on the host; a failing command fails the export. A service with
databases (`data.dumps`: Nextcloud's) adds a plain SQL dump of each under
`<service>/<host>/dumps/<database>.sql`, made by `pg_dump` on the host at export time; a failing
dump fails the export. (tar needs a member's size before its bytes, so a dump is spooled once
on the controller in an unnamed temporary file, which is gone when it has been copied.)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import shlex
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from coophost.errors import ExternalCommandError, UsageError
from coophost.layout import KNOWN_HOSTS_FILE
from coophost.registry import checks
from coophost.registry.loader import Loaded

MANIFEST = "MANIFEST.json"
SUMS = "SHA256SUMS"


@dataclass(frozen=True)
class Source:
    """Where one unit of the member may keep data on one host: absolute paths there.

    `expected` when the unit is deployed on that host: its data must be found. `archive` is
    the host's archive folder for the service, searched for `<owner>.*` entries.
    """

    service: str
    host: str
    paths: tuple[str, ...]
    expected: bool = False
    archive: str = ""
    owner: str = ""
    export: tuple[str, ...] = ()  # the catalogue's export command, filled in
    dumps: tuple[str, ...] = ()  # the unit's databases (PostgreSQL), dumped when deployed


@dataclass
class Manifest:
    """What an export holds."""

    member: str
    created: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The manifest as JSON data."""
        from coophost import __version__

        return {"member": self.member, "created": self.created, "coophost": __version__,
                "sources": self.sources, "files": self.files}


class HashingReader(io.RawIOBase):
    """Reads through to another file object, hashing and counting what passes."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        """Always readable."""
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        """Read from the inner file, hashing what was read."""
        data = self.inner.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data


def _plain_path(service: str, path: str) -> str:
    path = posixpath.normpath(path)
    if not path.startswith("/") or ".." in path.split("/"):
        raise UsageError(f"catalogue {service}: data path {path!r} is not a plain absolute path")
    return path


def plan_sources(loaded: Loaded, slug: str) -> list[Source]:
    """The member's data sources on every host, from the catalogue (reads only state.db)."""
    from coophost.backup.model import unit_dumps
    from coophost.desired.units import compute
    from coophost.state import StateDB

    root = loaded.root
    member = loaded.registry.members.get(slug)
    if member is None:
        raise checks.no_member(slug, loaded.registry.members)
    units = compute(loaded).units
    with StateDB(root) as db:
        applied = db.applied().units
    sources = []
    for service_name in sorted(member.services):
        data = loaded.catalogue.services[service_name].data
        templates = data.get("paths", [])
        if not templates:
            continue
        settings = member.services[service_name]
        chosen = [settings[p.name] for p in loaded.catalogue.services[service_name]
                  .parameters.values() if p.type == "member_domains"]  # the unit's domains
        domains = (chosen[0] if chosen else None) or [d.ascii for d in member.domains]
        paths: list[str] = []
        for template in templates:
            for domain in (domains if "{domain}" in template else [""]):
                path = _plain_path(service_name, template.format(
                    domain=domain, slug=slug, owner=member.owner))
                if path not in paths:
                    paths.append(path)
        archive = _plain_path(service_name, data["archive"]) if data.get("archive") else ""
        export = tuple(word.format(slug=slug, owner=member.owner)
                       for word in data.get("export", ()))
        try:
            dumps = tuple(d["name"] for d in unit_dumps(
                loaded.catalogue.services[service_name], member.owner, slug, settings))
        except ValueError as exc:
            raise UsageError(f"catalogue {service_name}: {exc}") from exc
        unit = units.get((slug, service_name))
        for host in sorted(loaded.registry.hosts):
            deployed = unit is not None and unit.host == host and \
                (host, slug, service_name) in applied
            sources.append(Source(service_name, host, tuple(paths), deployed, archive,
                                  member.owner, export if deployed else (),
                                  dumps if deployed else ()))
    return sources


def _safe_member_name(name: str) -> str | None:
    clean = posixpath.normpath(name.lstrip("/"))
    if clean in (".", "") or clean.startswith("../") or clean == "..":
        return None
    return clean


def _present(client: Any, source: Source) -> list[str]:
    """The source's paths that exist on the host, and its archived entries of this owner."""
    from coophost.ssh import run_argv

    existing = [path for path in source.paths
                if run_argv(client, ["sudo", "-n", "test", "-e", path])[0] == 0]
    if source.archive and source.owner:
        status, out, _ = run_argv(client, ["sudo", "-n", "find", source.archive, "-mindepth",
                                           "1", "-maxdepth", "1", "-name",
                                           f"{source.owner}.*", "-print0"])
        if status == 0:
            existing += sorted(name for name in out.split("\0") if name)
    return existing


def _copy_host(client: Any, source: Source, outer: tarfile.TarFile, manifest: Manifest
               ) -> None:
    """Stream one host's data for one unit into `outer`."""
    existing = _present(client, source)
    if source.expected and not any(path in existing for path in source.paths):
        raise ExternalCommandError(
            f"export: {source.service} is deployed on {source.host} but none of its data "
            f"({', '.join(source.paths)}) is there; nothing was exported",
            hint="run `coophost deploy` (it creates every unit's folders), then export again")
    if not existing:
        return
    manifest.sources.append({"service": source.service, "host": source.host,
                             "paths": list(source.paths), "found": existing})
    command = shlex.join(["sudo", "-n", "tar", "--create", "--file=-", "--directory=/",
                          "--numeric-owner", "--one-file-system", "--hard-dereference",
                          "--", *[p.lstrip("/") for p in existing]])
    _copy_stream(client, command, f"{source.service}/{source.host}", source, outer, manifest)
    if source.export:
        _copy_stream(client, shlex.join(["sudo", "-n", *source.export]),
                     f"{source.service}/{source.host}/export", source, outer, manifest)
        manifest.sources[-1]["export"] = list(source.export)
    for database in source.dumps:
        _copy_dump(client, source, database, outer, manifest)
    if source.dumps:
        manifest.sources[-1]["dumps"] = list(source.dumps)


def _copy_dump(client: Any, source: Source, database: str, outer: tarfile.TarFile,
               manifest: Manifest) -> None:
    """Add a plain SQL dump of `database` (pg_dump on the host) to `outer`."""
    command = shlex.join(["sudo", "-n", "runuser", "-u", "postgres", "--", "pg_dump",
                          "--no-password", "--format=plain", "--quote-all-identifiers",
                          "--dbname", database])
    channel = client.get_transport().open_session()
    channel.exec_command(command)
    stream = channel.makefile("rb")
    with tempfile.TemporaryFile() as spool:  # unnamed (O_TMPFILE), the sysadmin's only
        reader = HashingReader(stream)
        while block := reader.read(1 << 20):
            spool.write(block)
        status, errors = _finish(channel)
        if status != 0:
            raise ExternalCommandError(f"export: the dump of database {database} on "
                                       f"{source.host} failed (exit {status}): {errors[-300:]}")
        spool.seek(0)
        info = tarfile.TarInfo(f"{source.service}/{source.host}/dumps/{database}.sql")
        info.size, info.mode, info.mtime = reader.size, 0o600, int(time.time())
        outer.addfile(info, spool)
    manifest.files.append({"path": info.name, "size": reader.size,
                           "sha256": reader.sha256.hexdigest()})


def _copy_stream(client: Any, command: str, prefix: str, source: Source,
                 outer: tarfile.TarFile, manifest: Manifest) -> None:
    """Copy the tar stream `command` writes on the host into `outer`, under `prefix`."""
    channel = client.get_transport().open_session()
    channel.exec_command(command)
    stream = channel.makefile("rb")
    unreadable: tarfile.ReadError | None = None
    try:
        with tarfile.open(fileobj=stream, mode="r|") as inner:
            for item in inner:
                name = _safe_member_name(item.name)
                if name is None:
                    raise ExternalCommandError(f"export: {source.host} sent an unsafe name "
                                               f"{item.name!r}")
                if not (item.isfile() or item.isdir() or item.issym()):
                    raise ExternalCommandError(
                        f"export: {source.host}:/{name} is neither a file, a folder nor a "
                        "symbolic link; nothing was exported")
                copied = tarfile.TarInfo(f"{prefix}/{name}")
                copied.mode, copied.mtime = item.mode, item.mtime
                copied.type, copied.linkname = item.type, item.linkname
                if item.isfile():
                    data = inner.extractfile(item)
                    assert data is not None
                    reader = HashingReader(data)
                    copied.size = item.size
                    outer.addfile(copied, reader)  # type: ignore[arg-type]
                    manifest.files.append({"path": copied.name, "size": reader.size,
                                           "sha256": reader.sha256.hexdigest()})
                else:
                    outer.addfile(copied)
    except tarfile.ReadError as exc:  # reported below, after the command's own error if any
        unreadable = exc
    finally:
        status, errors = _finish(channel)
    if status != 0:
        raise ExternalCommandError(f"export: `{command}` on {source.host} exited {status}: "
                                   f"{errors[-300:]}")
    if unreadable is not None:
        raise ExternalCommandError(f"export: `{command}` on {source.host} did not write a "
                                   f"tar stream ({unreadable}): {errors[-300:]}")


def _finish(channel: Any) -> tuple[int, str]:
    """Wait for a command's exit on its SSH channel; its status and stderr; close it."""
    status = channel.recv_exit_status()
    errors = channel.makefile_stderr("rb").read().decode(errors="replace").strip()
    channel.close()
    return status, errors


def sums_line(digest: str, name: str) -> bytes:
    """One line of SHA256SUMS for `name`, escaped as GNU sha256sum escapes it.

    In a name holding a backslash, a line feed or a carriage return, those are written as a
    backslash followed by a backslash, `n` or `r`, and the line starts with a backslash; other
    bytes are kept as they are (a name that is not UTF-8 keeps its own bytes).
    """
    raw = name.encode("utf-8", "surrogateescape")
    escaped = raw.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
    return (b"\\" if escaped != raw else b"") + digest.encode() + b"  " + escaped + b"\n"


def export_member(coop: Path | Loaded, slug: str, out: IO[bytes]) -> Manifest:
    """Write the member's archive (tar.gz) to `out`, streaming; return its manifest.

    `coop`: the co-op directory, or the co-op the command loaded.
    """
    from coophost.members.audit import now
    from coophost.registry.hosts import connections
    from coophost.registry.loader import load_registry
    from coophost.ssh import connect

    loaded = coop if isinstance(coop, Loaded) else load_registry(coop)
    root = loaded.root
    sources = plan_sources(loaded, slug)
    entries = connections(loaded.registry.hosts) if sources else {}
    manifest = Manifest(member=slug, created=now())
    by_host: dict[str, list[Source]] = {}
    for source in sources:
        by_host.setdefault(source.host, []).append(source)
    # gzip level 6 (gzip's own default) over a plain tar stream: level 9, what tarfile's
    # "w|gz" uses, costs half again the time for a few per cent of size.
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w|", format=tarfile.PAX_FORMAT) as outer:
        for host, on_host in by_host.items():
            if host not in entries:
                raise UsageError(f"export: host {host} is not in hosts.yml")
            with connect(entries[host], root / KNOWN_HOSTS_FILE) as client:
                for source in on_host:
                    _copy_host(client, source, outer, manifest)
        sums = b"".join(sums_line(f["sha256"], f["path"]) for f in manifest.files)
        for name, payload in ((MANIFEST, (json.dumps(manifest.as_json(), indent=2,
                                                     sort_keys=True) + "\n").encode()),
                              (SUMS, sums)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(payload), 0o644, 0
            outer.addfile(info, io.BytesIO(payload))
    return manifest
