"""Data takeout: one archive of everything a member has on every host, streamed.

For each of the member's placed units, the catalogue's `data.paths` (filled with the unit's
domains and the member's slug) are read on the unit's host by `tar --create` over SSH (host
key pinned, run with sudo), and each file is copied from that stream into the archive while
its SHA-256 is computed. Neither the hosts nor the controller write a second copy: the only
copy made is the archive itself. MANIFEST.json (member, sources, every file with size and
checksum) and SHA256SUMS (`sha256sum -c` checks an extracted archive) close the archive.

Inside the archive, files sit under `<service>/<host>/<path on the host>`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import shlex
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from coophost.errors import ExternalCommandError, UsageError

MANIFEST = "MANIFEST.json"
SUMS = "SHA256SUMS"


@dataclass(frozen=True)
class Source:
    """Where one unit of the member keeps data: the host and the absolute paths there."""

    service: str
    host: str
    paths: tuple[str, ...]


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


def plan_sources(root: Path, slug: str) -> list[Source]:
    """The member's data sources, from the catalogue and the placement (reads only)."""
    from coophost.desired import compute
    from coophost.registry.loader import load_registry

    loaded = load_registry(root)
    member = loaded.registry.members.get(slug)
    if member is None:
        raise UsageError(f"no member {slug!r}")
    units = compute(root).units
    sources = []
    for service_name in sorted(member.services):
        unit = units.get((slug, service_name))
        templates = loaded.catalogue.services[service_name].data.get("paths", [])
        if unit is None or not templates:
            continue
        settings = member.services[service_name]
        domains = settings.get("domains") or [d.ascii for d in member.domains]
        paths: list[str] = []
        for template in templates:
            for domain in (domains if "{domain}" in template else [""]):
                path = posixpath.normpath(template.format(domain=domain, slug=slug))
                if not path.startswith("/") or ".." in path.split("/"):
                    raise UsageError(f"catalogue {service_name}: data path {path!r} is not "
                                     "a plain absolute path")
                if path not in paths:
                    paths.append(path)
        sources.append(Source(service_name, unit.host, tuple(paths)))
    return sources


def _safe_member_name(name: str) -> str | None:
    clean = posixpath.normpath(name.lstrip("/"))
    if clean in (".", "") or clean.startswith("../") or clean == "..":
        return None
    return clean


def _copy_host(client: Any, source: Source, outer: tarfile.TarFile, manifest: Manifest
               ) -> None:
    """Stream one host's data for one unit into `outer`."""
    existing = []
    for path in source.paths:
        _, stdout, _ = client.exec_command(shlex.join(["sudo", "-n", "test", "-e", path]))
        if stdout.channel.recv_exit_status() == 0:
            existing.append(path)
    manifest.sources.append({"service": source.service, "host": source.host,
                             "paths": list(source.paths), "found": existing})
    if not existing:
        return
    command = shlex.join(["sudo", "-n", "tar", "--create", "--file=-", "--directory=/",
                          "--numeric-owner", "--one-file-system", "--",
                          *[p.lstrip("/") for p in existing]])
    channel = client.get_transport().open_session()
    channel.exec_command(command)
    stream = channel.makefile("rb")
    try:
        with tarfile.open(fileobj=stream, mode="r|") as inner:
            for item in inner:
                name = _safe_member_name(item.name)
                if name is None or not (item.isfile() or item.isdir() or item.issym()):
                    continue
                copied = tarfile.TarInfo(f"{source.service}/{source.host}/{name}")
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
    finally:
        status = channel.recv_exit_status()
        errors = channel.makefile_stderr("rb").read().decode(errors="replace").strip()
        channel.close()
    if status != 0:
        raise ExternalCommandError(f"export: tar on {source.host} exited {status}: "
                                   f"{errors[-300:]}")


def sums_line(digest: str, name: str) -> bytes:
    """One line of SHA256SUMS for `name`, escaped as GNU sha256sum escapes it.

    In a name holding a backslash, a line feed or a carriage return, those are written as a
    backslash followed by a backslash, `n` or `r`, and the line starts with a backslash; other
    bytes are kept as they are (a name that is not UTF-8 keeps its own bytes).
    """
    raw = name.encode("utf-8", "surrogateescape")
    escaped = raw.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
    return (b"\\" if escaped != raw else b"") + digest.encode() + b"  " + escaped + b"\n"


def export_member(root: Path, slug: str, out: IO[bytes]) -> Manifest:
    """Write the member's archive (tar.gz) to `out`, streaming; return its manifest."""
    from coophost.inventory import KNOWN_HOSTS_FILE, load_hosts
    from coophost.requests import now
    from coophost.ssh import connect

    sources = plan_sources(root, slug)
    entries = {h.name: h for h in load_hosts(root)} if sources else {}
    manifest = Manifest(member=slug, created=now())
    # gzip level 6 (gzip's own default) over a plain tar stream: level 9, what tarfile's
    # "w|gz" uses, costs half again the time for a few per cent of size.
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w|", format=tarfile.PAX_FORMAT) as outer:
        for source in sources:
            if source.host not in entries:
                raise UsageError(f"export: host {source.host} is not in hosts.yml")
            with connect(entries[source.host], root / KNOWN_HOSTS_FILE) as client:
                _copy_host(client, source, outer, manifest)
        sums = b"".join(sums_line(f["sha256"], f["path"]) for f in manifest.files)
        for name, payload in ((MANIFEST, (json.dumps(manifest.as_json(), indent=2,
                                                     sort_keys=True) + "\n").encode()),
                              (SUMS, sums)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(payload), 0o644, 0
            outer.addfile(info, io.BytesIO(payload))
    return manifest
