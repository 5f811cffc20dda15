"""What backups are made of, as plain data: hosts, repositories, units, manifests. Pure.

Hosts in the `backup` group of hosts.yml keep one borg repository per (service host, member
life) under REPO_ROOT/<service host>/<owner>, reached through a dedicated sshd on BORG_PORT
that lets in one account, `borg`, with forced commands only: each service host's key may
append to its own folder (`borg serve --append-only --restrict-to-path`), the controller's
key may prune and read all of them. Archives are named `<service>-<UTC time>` and hold the
unit's data paths and its manifest (MANIFEST_DIR/<owner>/<service>.sha256: one line per
regular file, `<sha256>  <absolute path>`, and `L <link target>  <path>` for symlinks).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from coophost.registry.catalogue import DUMP_ENGINES, Service
from coophost.registry.model import Host

BACKUP_GROUP = "backup"
BORG_PORT = 2222
BORG_USER = "borg"
REPO_ROOT = "/srv/borg/repos"
MANIFEST_DIR = "/var/lib/coophost-backup/manifests"
DUMP_DIR = "/var/lib/coophost-backup/dumps"
# Dumps given to a host from elsewhere (an evacuation): `coophost-backup load-dumps` takes
# only a folder made from this template (mktemp), and removes it.
INCOMING_TEMPLATE = "/var/lib/coophost-backup/incoming.XXXXXXXX"
DB_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
ARCHIVE_SEP = "-"  # <service>-<time>; service names hold no "-" followed by a digit year


def backup_hosts(hosts: Mapping[str, Host]) -> list[str]:
    """The names of the co-op's backup hosts (group `backup`), sorted."""
    return sorted(name for name, host in hosts.items() if BACKUP_GROUP in host.groups)


def server_address(host: Host) -> str:
    """How service hosts and the controller reach a backup host: its lab address or its FQDN."""
    lab_ip = host.connection.vars.get("coophost_lab_ip") if host.connection else None
    return str(lab_ip) if lab_ip else host.fqdn


def repo_path(client: str, owner: str) -> str:
    """The repository of member life `owner`'s units on service host `client`."""
    return f"{REPO_ROOT}/{client}/{owner}"


def repo_url(address: str, client: str, owner: str) -> str:
    """The borg URL of that repository on the backup host at `address`."""
    host = f"[{address}]" if ":" in address else address
    return f"ssh://{BORG_USER}@{host}:{BORG_PORT}{repo_path(client, owner)}"


def manifest_path(owner: str, service: str) -> str:
    """Where a unit's manifest is written on its host (and kept inside each archive)."""
    return f"{MANIFEST_DIR}/{owner}/{service}.sha256"


def unit_paths(service: Service, owner: str, slug: str, domains: Iterable[str]) -> list[str]:
    """The unit's data paths on its host (its catalogue entry's `data.paths`, filled in)."""
    paths: list[str] = []
    for template in service.data.get("paths", ()):
        if "{domain}" in template:
            paths += [template.format(owner=owner, slug=slug, domain=d) for d in domains]
        else:
            paths.append(template.format(owner=owner, slug=slug))
    return sorted(set(paths))


def unit_dumps(service: Service, owner: str, slug: str, settings: Mapping[str, object]
               ) -> list[dict[str, str]]:
    """The unit's database dumps (catalogue `data.dumps`, filled in), where each is written.

    Each: {engine, name, file}; the file lies in DUMP_DIR/<owner>/<service>/, a folder that
    coophost-backup archives with the unit's data. Raises ValueError for an engine it cannot
    dump or a database name it will not quote (the catalogue names the file).
    """
    dumps = []
    for item in service.data.get("dumps", ()):
        values = {**{k: str(v) for k, v in settings.items()}, "owner": owner, "slug": slug}
        engine = str(item["engine"]).format(**values)
        name = str(item["name"]).format(**values)
        if engine not in DUMP_ENGINES:
            raise ValueError(f"{service.name}: data.dumps engine {engine!r} cannot be backed up "
                             f"(supported: {', '.join(sorted(DUMP_ENGINES))})")
        if not DB_NAME_RE.match(name):
            raise ValueError(f"{service.name}: data.dumps name {name!r} is not a database name "
                             "coophost-backup takes (a-z first, then a-z 0-9 _ . -, 63 at most)")
        dumps.append({"engine": engine, "name": name,
                      "file": f"{DUMP_DIR}/{owner}/{service.name}/{name}.sql"})
    return dumps


def authorized_keys(clients: Mapping[str, str], admin_key: str) -> str:
    """The backup account's authorized_keys: each client host confined to its own folder.

    `clients`: service host name -> its public key. Host names come from hosts.yml, checked
    there as inventory names; they are quoted into a forced command all the same.
    """
    lines = ["# Written by coophost (roles/backup). One line per service host: append-only,",
             "# its own folder only. The last line is the controller's (prune, restore, drill)."]
    for name in sorted(clients):
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"host name {name!r} cannot name a backup folder")
        lines.append(f'command="borg serve --append-only --restrict-to-path {REPO_ROOT}/{name}"'
                     f",restrict {clients[name]} coophost-backup@{name}")
    lines.append(f'command="borg serve --restrict-to-path {REPO_ROOT}",restrict {admin_key} '
                 "coophost-backup-admin")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Entry:
    """One manifest line: a file's SHA-256 (or `L<target>` for a symlink), size and mtime."""

    value: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ManifestDiff:
    """How restored files differ from a manifest.

    `moving`: files whose restored mtime differs from the manifest's: they changed between
    being hashed and being archived (a live service writes while it is backed up), so their
    content cannot be checked against this manifest. Not a failure; the next backup has them.
    """

    missing: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    moving: tuple[str, ...] = ()
    checked: int = 0

    @property
    def ok(self) -> bool:
        """Whether every file of the manifest came back as it was, and nothing else."""
        return not (self.missing or self.changed or self.extra)

    def summary(self, limit: int = 5) -> str:
        """One line naming what differs (the first few paths of each kind)."""
        parts = []
        for label, paths in (("missing", self.missing), ("changed", self.changed),
                             ("unexpected", self.extra),
                             ("written while archived (not checked)", self.moving)):
            if paths:
                shown = ", ".join(paths[:limit]) + (" ..." if len(paths) > limit else "")
                parts.append(f"{len(paths)} {label}: {shown}")
        same = f"{self.checked - len(self.moving) - len(self.changed) - len(self.missing)}" \
            " files identical"
        return "; ".join([same, *parts])


def parse_manifest(text: str) -> dict[str, Entry]:
    """Path -> Entry, from a manifest's lines (`<value>  <size> <mtime_ns>  <path>`)."""
    entries: dict[str, Entry] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        parts = line.split("  ", 2)
        try:
            value, meta, path = parts
            size, mtime = (int(x) for x in meta.split(" "))
        except ValueError:
            raise ValueError(f"manifest line {number} is malformed: {line[:60]!r}") from None
        if not path.startswith("/"):
            raise ValueError(f"manifest line {number} names no absolute path: {line[:60]!r}")
        entries[path] = Entry(value, size, mtime)
    return entries


def compare(manifest: Mapping[str, Entry], found: Mapping[str, Entry]) -> ManifestDiff:
    """Compare a manifest with what a restore produced (the same mapping, made from the files).

    A file whose mtime moved was written while it was archived (see ManifestDiff.moving); a
    file whose mtime is the manifest's must have the manifest's content.
    """
    missing = sorted(set(manifest) - set(found))
    extra = sorted(set(found) - set(manifest))
    changed, moving = [], []
    for path in sorted(set(manifest) & set(found)):
        want, got = manifest[path], found[path]
        if want.value == got.value:
            continue
        if want.mtime_ns != got.mtime_ns and not want.value.startswith("L"):
            moving.append(path)
        else:
            changed.append(path)
    return ManifestDiff(tuple(missing), tuple(changed), tuple(extra), tuple(moving),
                        len(manifest))
