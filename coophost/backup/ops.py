"""Backups from the controller: run them on the service hosts, list, restore and drill.

`run` asks each service host's coophost-backup (roles/backup) to push its units, hosts in
parallel. The other commands run borg here, on the controller, against the backup host's
borg sshd with the controller's key (pinned host key, passphrases from the vault, given to
borg through its environment, never in argv): `list` reads the repositories, `drill`
restores the latest archive of each unit into a scratch folder and compares every file with
the manifest the archive carries (and the service's own check: git's hooks run `git fsck`).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coophost.backup.model import (
    Entry,
    ManifestDiff,
    backup_hosts,
    compare,
    manifest_path,
    parse_manifest,
    repo_path,
    repo_url,
    server_address,
    unit_dumps,
    unit_paths,
)
from coophost.backup.render import admin_key, known_host_line, passphrase, server_host_key
from coophost.errors import ConfigError, UsageError
from coophost.fsutil import atomic_write
from coophost.layout import KNOWN_HOSTS_FILE, STATE_DIR
from coophost.registry import checks
from coophost.registry.loader import Loaded
from coophost.secrets import SecretStore

HOST_COMMAND = "/usr/local/sbin/coophost-backup"
DEFAULT_MAX_AGE_HOURS = 26  # a daily backup, and two hours of slack
SCRATCH = "backup-scratch"  # under .coophost/: drills' and local restores' work folders


@dataclass(frozen=True)
class Unit:
    """One deployed unit whose data is backed up: who, what, on which service host."""

    slug: str
    owner: str
    service: str
    host: str
    paths: tuple[str, ...] = ()  # its data paths on the host
    dump_dirs: tuple[str, ...] = ()  # where its database dumps are written (archived too)

    @property
    def name(self) -> str:
        """`slug/service`, as the CLI prints units."""
        return f"{self.slug}/{self.service}"


def units(loaded: Loaded, member: str | None = None) -> list[Unit]:
    """The co-op's placed units that have data paths (optionally one member's), sorted."""
    from coophost.desired.units import compute

    registry = loaded.registry
    if member is not None and member not in registry.members:
        raise checks.no_member(member, registry.members)
    found = []
    for (slug, service), unit in sorted(compute(loaded).units.items()):
        if member is not None and slug != member:
            continue
        backed = unit_on(loaded, slug, service, unit.host)
        if backed.paths:
            found.append(backed)
    return found


def unit_on(loaded: Loaded, slug: str, service: str, host: str) -> Unit:
    """Member `slug`'s unit of `service` as it is (or was) on `host`: its data and dumps."""
    member = loaded.registry.members[slug]
    entry = loaded.catalogue.services[service]
    paths = unit_paths(entry, member.owner, slug, [d.ascii for d in member.domains])
    dumps = unit_dumps(entry, member.owner, slug, member.services.get(service, {}))
    dump_dirs = tuple(sorted({posixpath.dirname(d["file"]) for d in dumps}))
    return Unit(slug, member.owner, service, host, tuple(paths), dump_dirs)


def host_result(status: int, out: str, err: str) -> dict[str, Any]:
    """The JSON line a host's coophost-backup printed last, or why there is none."""
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if lines:
        result: dict[str, Any] = json.loads(lines[-1])
        return result
    return {"ok": False, "error": err.strip()[-300:] or f"exit {status}"}


def backup_server(loaded: Loaded) -> str:
    """The backup host the controller reads (the first of group `backup`)."""
    servers = backup_hosts(loaded.registry.hosts)
    if not servers:
        raise ConfigError(f"{loaded.root / 'hosts.yml'}: no host in group `backup`",
                          hint="add a backup host (`coophost lab up` makes b1 in the lab)")
    return servers[0]


# ---- run ------------------------------------------------------------------------------------


@dataclass
class HostRun:
    """What one service host's coophost-backup reported."""

    host: str
    ok: bool = False
    seconds: float = 0.0
    archives: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {"host": self.host, "ok": self.ok, "seconds": round(self.seconds, 2),
                "archives": self.archives, "error": self.error}


def run(loaded: Loaded, member: str | None = None, hosts: frozenset[str] = frozenset(),
        progress: Any = None) -> list[HostRun]:
    """Back up the units on each service host now, all hosts at once; one report per host."""
    from coophost.registry.hosts import connections

    say = progress or (lambda _msg: None)
    chosen = [u for u in units(loaded, member) if not hosts or u.host in hosts]
    unknown = hosts - set(loaded.registry.hosts)
    if unknown:
        raise checks.no_host(sorted(unknown)[0], loaded.registry.hosts)
    backup_server(loaded)
    on_host: dict[str, list[Unit]] = {}
    for unit in chosen:
        on_host.setdefault(unit.host, []).append(unit)
    entries = connections(loaded.registry.hosts)
    owner = loaded.registry.members[member].owner if member else None

    def one(host: str) -> HostRun:
        from coophost.errors import CoophostError
        from coophost.ssh import connect, run_argv

        report = HostRun(host)
        started = time.monotonic()
        argv = ["sudo", "-n", HOST_COMMAND, "create", *(["--owner", owner] if owner else [])]
        try:
            with connect(entries[host], loaded.root / KNOWN_HOSTS_FILE) as client:
                status, out, err = run_argv(client, argv, timeout=3600)
        except CoophostError as exc:
            report.error = exc.message
        else:
            report.archives = [json.loads(line) for line in out.splitlines()
                               if line.startswith("{")]
            report.ok = status == 0 and all(a.get("ok") for a in report.archives)
            if status != 0 and not report.error:
                failed = [a for a in report.archives if not a.get("ok")]
                report.error = failed[0].get("error", "") if failed else err.strip()[-300:]
        report.seconds = time.monotonic() - started
        say(f"{host}: {'ok' if report.ok else 'FAILED'} ({len(report.archives)} archives, "
            f"{report.seconds:.1f} s)")
        return report

    if not on_host:
        return []
    with ThreadPoolExecutor(max_workers=len(on_host)) as pool:
        reports = list(pool.map(one, sorted(on_host)))
    record_made(loaded, chosen, reports)
    return reports


def record_made(loaded: Loaded, chosen: list[Unit], reports: list[HostRun]) -> None:
    """Record in state.db the archives a run made in the first backup host's repositories.

    `backup list` and the member verb `backups` find them there.
    """
    from coophost.state import StateDB

    server = backup_server(loaded)
    address = server_address(loaded.registry.hosts[server])
    by_url = {repo_url(address, u.host, u.owner): u for u in chosen}
    rows = []
    for report in reports:
        for made in report.archives:
            unit = by_url.get(str(made.get("repo")))
            if made.get("ok") and made.get("id") and unit is not None \
                    and made.get("service") == unit.service:
                rows.append((f"{server}:{repo_path(unit.host, unit.owner)}", made["archive"],
                             made["id"], unit.owner, unit.service, time.time()))
    with StateDB(loaded.root) as db, db.transaction() as conn:
        conn.executemany(
            "INSERT OR IGNORE INTO backup_archive (repo, archive, archive_id, owner, service, "
            "seen_at) VALUES (?, ?, ?, ?, ?, ?)", rows)


def member_backups(root: Path, loaded: Loaded, slug: str) -> list[dict[str, Any]]:
    """What the co-op knows of one member's backups, from state.db (no host is contacted).

    Per unit of the member: its archives (as last seen), the newest and the last drill.
    """
    from coophost.state import StateDB

    member = loaded.registry.members[slug]
    with StateDB(root) as db:
        drills = last_drills(db)
        rows = db.conn.execute(
            "SELECT service, archive, seen_at FROM backup_archive WHERE owner = ? "
            "AND pruned_at IS NULL ORDER BY archive", (member.owner,)).fetchall()
    found: dict[str, list[str]] = {}
    for service, archive, _seen in rows:
        found.setdefault(service, []).append(archive)
    result = []
    for service in sorted(member.services):
        names = found.get(service, [])
        drill = drills.get((member.owner, service))
        result.append({"service": service, "archives": len(names),
                       "last": names[-1] if names else None,
                       "last_drill": None if drill is None else {
                           "archive": drill["archive"], "ok": drill["ok"],
                           "at": drill["at"]}})
    return result


# ---- borg on the controller ------------------------------------------------------------------


class Borg:
    """borg on the controller, reaching one backup host's borg sshd with the controller key."""

    def __init__(self, loaded: Loaded, server: str | None = None) -> None:
        self.loaded = loaded
        self.server = server or backup_server(loaded)
        self.address = server_address(loaded.registry.hosts[self.server])
        self.store = SecretStore(loaded.root, loaded.registry.coop.vault, loaded.catalogue)
        self._dir: Path | None = None

    @contextmanager
    def session(self) -> Iterator[Borg]:
        """Write the key and pinned host key to a private folder for the session's commands."""
        base = self.loaded.root / STATE_DIR
        base.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="borg-ssh-", dir=base)).resolve()
        try:
            atomic_write(folder / "key", self.store.value(admin_key()), 0o600)
            atomic_write(folder / "known_hosts", known_host_line(
                self.address, self.store.public_key(server_host_key(self.server))) + "\n", 0o600)
            self._dir = folder
            yield self
        finally:
            self._dir = None
            shutil.rmtree(folder, ignore_errors=True)

    def env(self, owner: str) -> dict[str, str]:
        """The borg environment for one member life's repository."""
        assert self._dir is not None, "use Borg.session()"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BORG_")}
        env.update({
            "BORG_RSH": (f"ssh -i {self._dir / 'key'} -o UserKnownHostsFile="
                         f"{self._dir / 'known_hosts'} -o StrictHostKeyChecking=yes "
                         "-o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=20"),
            "BORG_PASSPHRASE": self.store.value(passphrase(owner)),
            "BORG_BASE_DIR": str((self.loaded.root / STATE_DIR / "borg").resolve()),
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "no",
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
            "BORG_CHECK_I_KNOW_WHAT_I_AM_DOING": "NO",
            "LANG": "C.UTF-8",
        })
        return env

    def repo_key(self, unit: Unit) -> str:
        """The repository's name in state.db: backup host and path."""
        return f"{self.server}:{repo_path(unit.host, unit.owner)}"

    def forget(self, repo_id: str) -> None:
        """Drop the controller's cache and security record of a repository (after a rollback)."""
        base = self.loaded.root / STATE_DIR / "borg"
        for folder in (base / ".config" / "borg" / "security" / repo_id,
                       base / ".cache" / "borg" / repo_id):
            shutil.rmtree(folder, ignore_errors=True)

    def repo(self, unit: Unit) -> str:
        """The unit's repository URL on this backup host."""
        return repo_url(self.address, unit.host, unit.owner)

    def call(self, unit: Unit, args: list[str], cwd: Path | None = None
             ) -> subprocess.CompletedProcess[str]:
        """Run `borg ARGS` for the unit's repository (the caller puts the URL in ARGS)."""
        if shutil.which("borg") is None:
            raise ConfigError("borg is not installed on the controller",
                              hint="apt install borgbackup (scripts/setup-host does)")
        return subprocess.run(["borg", *args], env=self.env(unit.owner), cwd=cwd, text=True,
                              capture_output=True, check=False, timeout=3600)

    def archives(self, unit: Unit) -> tuple[list[dict[str, Any]], str]:
        """The unit's archives, oldest first, and an error text ("" when listed)."""
        done = self.call(unit, ["list", "--json", "--glob-archives", f"{unit.service}-*",
                                self.repo(unit)])
        if done.returncode != 0:
            if "does not exist" in done.stderr:
                return [], ""
            return [], borg_error(done.stderr)
        return list(json.loads(done.stdout)["archives"]), ""


def borg_error(stderr: str) -> str:
    """The last meaningful line of borg's stderr."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "borg failed"


# ---- list -----------------------------------------------------------------------------------


def max_age_hours(loaded: Loaded) -> int:
    """How old a unit's last backup may be (coop.yml retention.backup_max_age_hours)."""
    return int(loaded.registry.coop.retention.get("backup_max_age_hours",
                                                   DEFAULT_MAX_AGE_HOURS))


def listing(loaded: Loaded, member: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """Each unit's archives, last backup's age and last drill; exit 1 when one is too old."""
    from coophost.state import StateDB

    chosen = units(loaded, member)
    limit = max_age_hours(loaded)
    rows = []
    code = 0
    borg = Borg(loaded)
    with StateDB(loaded.root) as db, borg.session():
        drills = last_drills(db)
        for unit in chosen:
            archives, error = borg.archives(unit)
            vanished = [] if error else remember(db, borg, unit, archives)
            last = archives[-1] if archives else None
            age = (time.time() - parse_time(last["start"])) / 3600 if last else None
            fresh = age is not None and age <= limit and not error
            if vanished:
                error = (f"{len(vanished)} archive(s) vanished without a prune by coophost "
                         f"({', '.join(vanished[:3])}): deleted with the service host's key? "
                         f"`coophost backup rollback {unit.slug} {unit.service}` brings them "
                         "back")
            code = code if fresh and not vanished else 1
            rows.append({"member": unit.slug, "service": unit.service, "host": unit.host,
                         "archives": len(archives), "last": last["archive"] if last else None,
                         "age_hours": None if age is None else round(age, 2),
                         "fresh": fresh, "vanished": vanished, "error": error,
                         "drill": drills.get((unit.owner, unit.service))})
    return rows, code


def remember(db: Any, borg: Borg, unit: Unit, archives: list[dict[str, Any]]) -> list[str]:
    """Record the archives seen in the unit's repository; return the vanished ones.

    Vanished: seen before, gone now, and never pruned by coophost (oldest first).
    """
    repo = borg.repo_key(unit)
    now = time.time()
    with db.transaction() as conn:
        conn.executemany(
            "INSERT OR IGNORE INTO backup_archive (repo, archive, archive_id, owner, service, "
            "seen_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(repo, a["archive"], a["id"], unit.owner, unit.service, now) for a in archives])
        rows = conn.execute(
            "SELECT archive, archive_id FROM backup_archive WHERE repo = ? AND service = ? "
            "AND pruned_at IS NULL ORDER BY seen_at, archive", (repo, unit.service)).fetchall()
    present = {a["id"] for a in archives}
    return [name for name, archive_id in rows if archive_id not in present]


def parse_time(text: str) -> float:
    """An archive time (local, without zone, as borg prints it) as epoch seconds."""
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def last_drills(db: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """The last drill of each unit: (owner, service) -> {archive, at, ok, detail}."""
    rows = db.conn.execute(
        "SELECT owner, service, archive, drilled_at, ok, detail FROM backup_drill "
        "WHERE id IN (SELECT MAX(id) FROM backup_drill GROUP BY owner, service)").fetchall()
    return {(o, s): {"archive": a, "at": t, "ok": bool(ok), "detail": d}
            for o, s, a, t, ok, d in rows}


# ---- drill and restore to a folder ------------------------------------------------------------


@dataclass
class Drill:
    """One unit's drill: its latest archive restored and compared with its manifest."""

    unit: Unit
    archive: str = ""
    ok: bool = False
    detail: str = ""
    files: int = 0
    seconds: float = 0.0
    diff: ManifestDiff | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {"member": self.unit.slug, "service": self.unit.service, "host": self.unit.host,
                "archive": self.archive, "ok": self.ok, "detail": self.detail,
                "files": self.files, "seconds": round(self.seconds, 2)}


def scan(root: Path, paths: list[str]) -> dict[str, Entry]:
    """Manifest entries of the files restored under `root` for the original `paths`."""
    found: dict[str, Entry] = {}
    for original in paths:
        top = root / original.lstrip("/")
        if not top.exists() and not top.is_symlink():
            continue
        for folder, dirs, files in os.walk(top):
            dirs.sort()
            for name in [*dirs, *files]:
                path = Path(folder) / name
                st = path.lstat()
                key = "/" + str(path.relative_to(root))
                if stat.S_ISLNK(st.st_mode):
                    found[key] = Entry("L" + os.readlink(path), st.st_size, st.st_mtime_ns)
                elif stat.S_ISREG(st.st_mode):
                    found[key] = Entry(sha256_file(path), st.st_size, st.st_mtime_ns)
    return found


def sha256_file(path: Path) -> str:
    """A file's SHA-256, hex."""
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def extract_and_check(borg: Borg, unit: Unit, archive: str, target: Path) -> Drill:
    """Extract `archive` of `unit` into `target` and compare it with the archive's manifest."""
    drill = Drill(unit, archive)
    started = time.monotonic()
    target.mkdir(parents=True, exist_ok=True)
    done = borg.call(unit, ["extract", "--numeric-ids", f"{borg.repo(unit)}::{archive}"],
                     cwd=target)
    if done.returncode != 0:
        drill.detail = f"borg extract failed: {borg_error(done.stderr)}"
    else:
        manifest_file = target / manifest_path(unit.owner, unit.service).lstrip("/")
        try:
            manifest = parse_manifest(manifest_file.read_text())
        except (OSError, ValueError) as exc:
            drill.detail = f"the archive's manifest is unreadable: {exc}"
        else:
            found = scan(target, [*unit.paths, *unit.dump_dirs])
            drill.diff = compare(manifest, found)
            drill.files = len(manifest)
            drill.ok = drill.diff.ok
            drill.detail = drill.diff.summary()
            if drill.ok:  # the service's own check of restored data (git: fsck)
                from coophost.services import hooks_for

                broken = hooks_for(borg.loaded.catalogue.services[unit.service]) \
                    .verify_restored(target)
                if broken:
                    drill.ok = False
                    drill.detail += f"; {broken}"
    drill.seconds = time.monotonic() - started
    return drill


def drill(loaded: Loaded, member: str | None = None, progress: Any = None
          ) -> tuple[list[Drill], int]:
    """Restore each unit's latest archive into a scratch folder, compare it, record it.

    Exit status 1 on any difference, and for a unit that has no archive yet.
    """
    from coophost.state import StateDB

    say = progress or (lambda _msg: None)
    results = []
    scratch_root = loaded.root / STATE_DIR / SCRATCH
    scratch_root.mkdir(parents=True, exist_ok=True)
    borg = Borg(loaded)
    with borg.session():
        for unit in units(loaded, member):
            archives, error = borg.archives(unit)
            if not archives:
                result = Drill(unit, detail=error or "no archive to drill")
            else:
                work = Path(tempfile.mkdtemp(prefix="drill-", dir=scratch_root))
                try:
                    result = extract_and_check(borg, unit, archives[-1]["archive"], work)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
            say(result)
            results.append(result)
    with StateDB(loaded.root) as db, db.transaction() as conn:
        for result in results:
            conn.execute("INSERT INTO backup_drill (owner, service, host, archive, drilled_at, "
                         "ok, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (result.unit.owner, result.unit.service, result.unit.host,
                          result.archive, time.time(), int(result.ok), result.detail))
    return results, 0 if results and all(r.ok for r in results) else 1


def find_unit(loaded: Loaded, member: str, service: str) -> Unit:
    """The member's unit of `service` (exit 2 when it has none with data)."""
    for unit in units(loaded, member):
        if unit.service == service:
            return unit
    raise UsageError(f"member {member} has no {service} unit with data to restore")


def pick_archive(borg: Borg, unit: Unit, archive: str | None) -> str:
    """`archive` when the unit's repository has it, else the latest (exit 2 when none)."""
    archives, error = borg.archives(unit)
    if error:
        raise ConfigError(f"{unit.name}: cannot list its backups: {error}")
    names = [a["archive"] for a in archives]
    if not names:
        raise UsageError(f"{unit.name} has no backup yet (`coophost backup run`)")
    if archive is None:
        return names[-1]
    if archive not in names:
        raise UsageError(f"{unit.name} has no archive {archive!r} (latest: {names[-1]})")
    return archive


def restore_to_path(loaded: Loaded, member: str, service: str, archive: str | None,
                    to: Path) -> Drill:
    """Restore an archive of the unit into the local folder `to` (new or empty), checked."""
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise UsageError(f"--to {to}: must be a new or empty folder")
    unit = find_unit(loaded, member, service)
    borg = Borg(loaded)
    with borg.session():
        name = pick_archive(borg, unit, archive)
        return extract_and_check(borg, unit, name, to)


def restore_on_host(loaded: Loaded, member: str, service: str, archive: str | None
                    ) -> dict[str, Any]:
    """Put an archive of the unit back in place on its host (the current data is kept aside)."""
    from coophost.registry.hosts import connections
    from coophost.ssh import connect, run_argv

    unit = find_unit(loaded, member, service)
    borg = Borg(loaded)
    with borg.session():
        name = pick_archive(borg, unit, archive)
    entry = connections(loaded.registry.hosts)[unit.host]
    with connect(entry, loaded.root / KNOWN_HOSTS_FILE) as client:
        status, out, err = run_argv(client, ["sudo", "-n", HOST_COMMAND, "restore",
                                             unit.owner, service, name], timeout=3600)
    result = host_result(status, out, err)
    result.update(member=member, service=service, host=unit.host, archive=name)
    return result


RESTORE_AREA = "/var/lib/coophost-restore"  # on a host: restored copies set aside, root only


def restore_target(owner: str, service: str, archive: str) -> str:
    """Where `backup restore --to-host` puts an archive on the host: a new root-only folder."""
    return f"{RESTORE_AREA}/{owner}.{service}.{archive}"


def restore_to_host(loaded: Loaded, member: str, service: str, archive: str | None,
                    host: str) -> dict[str, Any]:
    """Restore an archive of the unit onto another co-op host, set aside and checked.

    The archive is extracted here and compared with its manifest first; only a matching copy
    is streamed to `host`, into a new folder readable by root alone (the files keep their
    owners and modes), and every file there is compared by SHA-256 with what was sent.
    Nothing the host serves changes: the copy is for a sysadmin to look at or put in place.
    """
    from coophost.members.carry import (
        folder_exists,
        local_sums,
        push_local,
        remote_sums,
        run_checked,
    )
    from coophost.registry.hosts import connections
    from coophost.ssh import connect

    if host not in loaded.registry.hosts:
        raise checks.no_host(host, loaded.registry.hosts)
    unit = find_unit(loaded, member, service)
    scratch_root = loaded.root / STATE_DIR / SCRATCH
    scratch_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="restore-", dir=scratch_root))
    borg = Borg(loaded)
    try:
        with borg.session():
            name = pick_archive(borg, unit, archive)
            checked = extract_and_check(borg, unit, name, work)
        result: dict[str, Any] = {**checked.as_dict(), "to_host": host,
                                  "to": restore_target(unit.owner, service, name)}
        if not checked.ok:
            result["error"] = f"the archive does not match its manifest: {checked.detail}"
            return result
        target = result["to"]
        with connect(connections(loaded.registry.hosts)[host],
                     loaded.root / KNOWN_HOSTS_FILE) as client:
            if folder_exists(client, target):
                raise UsageError(f"{host}:{target} exists already: this archive was restored "
                                 "there before (remove that folder to restore it again)")
            run_checked(client, ["sudo", "-n", "install", "-d", "-m", "0700", "-o", "root", "-g",
                          "root", RESTORE_AREA], f"{host}: make {RESTORE_AREA}")
            run_checked(client, ["sudo", "-n", "install", "-d", "-m", "0700", "-o", "root", "-g",
                          "root", target], f"{host}: make {target}")
            sent = local_sums(work)
            result["bytes"] = push_local(work, client, target)
            there = remote_sums(client, target, host)
        wrong = sorted(n for n, digest in sent.items() if there.get(n) != digest)
        extra = sorted(set(there) - set(sent))
        result["ok"] = not wrong and not extra
        if not result["ok"]:
            result["error"] = (f"{len(wrong)} file(s) missing or different on {host}"
                               + (f", e.g. {wrong[0]}" if wrong else "")
                               + (f"; {len(extra)} unexpected" if extra else ""))
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- rollback ---------------------------------------------------------------------------------

ROLLBACK_COMMAND = "/usr/local/sbin/coophost-borg-rollback"


def rollback(loaded: Loaded, member: str, service: str, progress: Any = None
             ) -> dict[str, Any]:
    """Bring back archives that vanished from a unit's repository without a prune by coophost.

    A service host's key is append-only: its `borg delete` or `prune` hides archives by
    appending a transaction and removes no data. This rolls the repository back, on the backup
    host, one transaction at a time (later segments are moved to a quarantine folder there,
    never deleted) until every archive the controller recorded is listed again, then makes
    the service host and the controller forget the newer state they had seen.
    """
    from coophost.registry.hosts import connections
    from coophost.ssh import connect, run_argv
    from coophost.state import StateDB

    say = progress or (lambda _msg: None)
    unit = find_unit(loaded, member, service)
    borg = Borg(loaded)
    entries = connections(loaded.registry.hosts)
    path = repo_path(unit.host, unit.owner)
    with StateDB(loaded.root) as db, borg.session():
        archives, error = borg.archives(unit)
        if error:
            raise ConfigError(f"{unit.name}: cannot list its backups: {error}")
        vanished = remember(db, borg, unit, archives)
        if not vanished:
            return {"ok": True, "member": member, "service": service, "rolled_back": False,
                    "detail": "no archive vanished: nothing to roll back"}
        info = borg.call(unit, ["info", "--json", borg.repo(unit)])
        repo_id = json.loads(info.stdout)["repository"]["id"] if info.returncode == 0 else ""
        with connect(entries[borg.server], loaded.root / KNOWN_HOSTS_FILE) as client:
            status, out, err = run_argv(client, ["sudo", "-n", ROLLBACK_COMMAND,
                                                 "transactions", path])
            if status != 0:
                raise ConfigError(f"{borg.server}: {ROLLBACK_COMMAND} failed: {err.strip()}")
            transactions = [t["id"] for t in json.loads(out)]
            steps = []
            for target in reversed(transactions[:-1]):
                status, out, err = run_argv(client, ["sudo", "-n", ROLLBACK_COMMAND, "to",
                                                     path, str(target)])
                if status != 0:
                    raise ConfigError(f"{borg.server}: rollback to {target} failed: "
                                      f"{err.strip()}")
                steps.append(json.loads(out))
                borg.forget(repo_id)
                archives, error = borg.archives(unit)
                still = [] if error else remember(db, borg, unit, archives)
                say(f"{unit.name}: back to transaction {target}: "
                    f"{len(vanished) - len(still)} of {len(vanished)} archives back")
                if not error and not still:
                    break
            else:
                return {"ok": False, "member": member, "service": service,
                        "rolled_back": bool(steps), "steps": steps,
                        "detail": "no earlier transaction lists every recorded archive"}
    with connect(entries[unit.host], loaded.root / KNOWN_HOSTS_FILE) as client:
        run_argv(client, ["sudo", "-n", HOST_COMMAND, "forget-repo", repo_id])
    return {"ok": True, "member": member, "service": service, "rolled_back": True,
            "archives_back": vanished, "steps": steps,
            "detail": f"{len(vanished)} archive(s) back; the later segments are kept in "
                      f"{steps[-1]['quarantine']} on {borg.server}"}


def mark_transactions(loaded: Loaded, server: str, path: str
                      ) -> subprocess.CompletedProcess[str]:
    """Start the repository's transactions log afresh after a write by the controller's key."""
    from coophost.registry.hosts import connections
    from coophost.ssh import connect, run_argv

    entry = connections(loaded.registry.hosts)[server]
    with connect(entry, loaded.root / KNOWN_HOSTS_FILE) as client:
        status, out, err = run_argv(client, ["sudo", "-n", ROLLBACK_COMMAND, "mark", path])
    return subprocess.CompletedProcess(["mark"], status, out, err)


# ---- prune ------------------------------------------------------------------------------------


def prune(loaded: Loaded, member: str | None = None, progress: Any = None
          ) -> tuple[list[dict[str, Any]], int]:
    """Prune each unit's archives older than coop.yml's retention.backups_days, then compact.

    Runs from the controller's key, the only one that can really delete. A repository with
    archives that vanished (hidden by a service host's append-only key) is refused: pruning it
    would make that deletion final; `backup rollback` comes first. The last archive is always
    kept. Archives to prune are recorded as pruned before borg prunes them, so they are never
    taken for vanished ones.
    """
    from coophost.state import StateDB

    say = progress or (lambda _msg: None)
    days = int(loaded.registry.coop.retention.get("backups_days", 7))
    keep = ["--keep-last", "1"] + (["--keep-within", f"{days}d"] if days > 0 else [])
    results = []
    code = 0
    borg = Borg(loaded)
    with StateDB(loaded.root) as db, borg.session():
        for unit in units(loaded, member):
            row: dict[str, Any] = {"member": unit.slug, "service": unit.service,
                                   "host": unit.host, "pruned": [], "kept": 0, "ok": False}
            archives, error = borg.archives(unit)
            vanished = [] if error else remember(db, borg, unit, archives)
            if error or vanished:
                row["error"] = error or (
                    f"refused: {len(vanished)} archive(s) vanished without a prune by "
                    f"coophost; `coophost backup rollback {unit.slug} {unit.service}` first")
                results.append(row)
                code = 1
                say(f"{unit.name}: {row['error']}")
                continue
            if not archives:
                row.update(ok=True)
                results.append(row)
                continue
            glob = ["--glob-archives", f"{unit.service}-*"]
            planned = borg.call(unit, ["prune", "--dry-run", "--list", *keep, *glob,
                                       borg.repo(unit)])
            names = [line.split()[2] for line in planned.stderr.splitlines()
                     if line.startswith("Would prune:")]
            if planned.returncode == 0 and names:
                with db.transaction() as conn:
                    conn.executemany(
                        "UPDATE backup_archive SET pruned_at = ? WHERE repo = ? AND archive = ?",
                        [(time.time(), borg.repo_key(unit), name) for name in names])
                done = borg.call(unit, ["prune", *keep, *glob, borg.repo(unit)])
                if done.returncode == 0:
                    done = borg.call(unit, ["compact", borg.repo(unit)])
                if done.returncode == 0:  # the log restarts here (see coophost-borg-rollback)
                    done = mark_transactions(loaded, borg.server, repo_path(unit.host,
                                                                            unit.owner))
                planned = done
            row.update(pruned=names, kept=len(archives) - len(names),
                       ok=planned.returncode == 0)
            if planned.returncode != 0:
                row["error"] = borg_error(planned.stderr)
                code = 1
            say(f"{unit.name}: {len(names)} pruned, {row['kept']} kept")
            results.append(row)
    return results, code


# ---- hand-over --------------------------------------------------------------------------------


@dataclass
class Handed:
    """One repository handed over: its copy, key, and what a check of the copy found."""

    host: str
    repo: str
    tarball: str = ""
    key: str = ""
    archives: int = 0
    size: int = 0
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"host": self.host, "repo": self.repo, "tarball": self.tarball, "key": self.key,
                "archives": self.archives, "bytes": self.size, "error": self.error}


HANDOVER_README = """\
The backups of {slug} at {coop}, handed over on {day}.

Each <host>-<owner>.borg.tar holds one borg repository (borgbackup 1.2, repokey-blake2): the
archives of your data on that service host. The repository key is inside it and also in the
matching .borg-key file; `passphrase` opens them all. To read one:

    tar -xf <host>-<owner>.borg.tar
    BORG_PASSPHRASE="$(cat passphrase)" borg list <owner>
    BORG_PASSPHRASE="$(cat passphrase)" borg extract <owner>::<archive>

Each archive holds your files as they were on the host, and a manifest
(var/lib/coophost-backup/manifests/<owner>/<service>.sha256) with the SHA-256 of every file.
Keep the passphrase private: with it, anyone holding a copy can read your data.
"""


def member_repos(loaded: Loaded, slug: str) -> list[str]:
    """The service hosts whose repositories hold the member life's backups (seen or placed)."""
    from coophost.state import StateDB

    member = loaded.registry.members.get(slug)
    if member is None:
        raise checks.no_member(slug, loaded.registry.members)
    hosts = {unit.host for unit in units(loaded, slug)}
    with StateDB(loaded.root) as db:
        for (repo,) in db.conn.execute(
                "SELECT DISTINCT repo FROM backup_archive WHERE owner = ?", (member.owner,)):
            parts = str(repo).split(":", 1)[-1].rstrip("/").split("/")
            if len(parts) >= 2 and parts[-1] == member.owner:
                hosts.add(parts[-2])
    return sorted(hosts)


def handover(loaded: Loaded, slug: str, out: Path, progress: Any = None) -> list[Handed]:
    """Copy the member life's borg repositories, keys and passphrase into the new folder `out`.

    Each repository is streamed from the backup host (over its normal SSH, pinned key, tar with
    sudo) into `<host>-<owner>.borg.tar`, its key exported with `borg key export`, and the copy
    is checked here as the member would use it: extracted into a scratch folder and listed
    with the passphrase alone, in a borg home of its own; the archives must be those the
    backup host lists. Nothing is left half-written: each file is written atomically.
    """
    from coophost.fsutil import atomic_stream
    from coophost.registry.hosts import connections
    from coophost.ssh import connect

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out}: must be a new or empty folder")
    member = loaded.registry.members.get(slug)
    if member is None:
        raise checks.no_member(slug, loaded.registry.members)
    hosts = member_repos(loaded, slug)
    borg = Borg(loaded)
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    handed: list[Handed] = []
    entry = connections(loaded.registry.hosts)[borg.server]
    with borg.session(), connect(entry, loaded.root / KNOWN_HOSTS_FILE) as client:
        for host in hosts:
            unit = Unit(slug, member.owner, "", host)
            item = Handed(host, borg.repo(unit))
            handed.append(item)
            if progress is not None:
                progress(f"{host}: copying {repo_path(host, member.owner)}")
            listed = borg.call(unit, ["list", "--json", borg.repo(unit)])
            if listed.returncode != 0:
                item.error = borg_error(listed.stderr)
                continue
            names = sorted(a["archive"] for a in json.loads(listed.stdout)["archives"])
            base = f"{host}-{member.owner}"
            key = borg.call(unit, ["key", "export", borg.repo(unit), "-"])
            if key.returncode != 0:
                item.error = f"borg key export: {borg_error(key.stderr)}"
                continue
            atomic_write(out / f"{base}.borg-key", key.stdout, 0o600)
            item.key = f"{base}.borg-key"
            tarball = out / f"{base}.borg.tar"
            transport = client.get_transport()
            assert transport is not None, "connect() returned a connected client"
            channel = transport.open_session()
            channel.exec_command(shlex.join([
                "sudo", "-n", "tar", "--create", "--file=-",
                f"--directory={repo_path(host, '').rstrip('/')}", member.owner]))
            with atomic_stream(tarball, 0o600) as handle:
                while True:
                    block = channel.recv(1 << 16)
                    if not block:
                        break
                    handle.write(block)
                    item.size += len(block)
                status = channel.recv_exit_status()
                if status != 0:
                    err = channel.recv_stderr(4096).decode(errors="replace")
                    raise ConfigError(f"{borg.server}: tar of {repo_path(host, member.owner)} "
                                      f"exited {status}: {err.strip()[-300:]}")
            item.tarball = tarball.name
            item.archives = len(names)
            problem = _check_copy(tarball, member.owner, borg.store.value(passphrase(
                member.owner)), names, loaded.root / STATE_DIR / SCRATCH)
            if problem:
                item.error = problem
    atomic_write(out / "passphrase", borg.store.value(passphrase(member.owner)) + "\n", 0o600)
    import datetime as dt

    atomic_write(out / "README.txt", HANDOVER_README.format(
        slug=slug, coop=loaded.registry.coop.name, day=dt.date.today().isoformat()), 0o600)
    return handed


def _check_copy(tarball: Path, owner: str, secret: str, names: list[str], scratch: Path
                ) -> str:
    """Open the handed-over copy as the member would; "" when it lists exactly `names`."""
    import tarfile

    scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="handover-", dir=scratch))
    try:
        with tarfile.open(tarball) as tar:
            tar.extractall(work, filter="data")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BORG_")}
        env.update({"BORG_PASSPHRASE": secret, "BORG_BASE_DIR": str(work / "home"),
                    "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes", "LANG": "C.UTF-8"})
        done = subprocess.run(["borg", "list", "--json", str(work / owner)], env=env,
                              text=True, capture_output=True, check=False, timeout=600)
        if done.returncode != 0:
            return f"the copy does not open: {borg_error(done.stderr)}"
        found = sorted(a["archive"] for a in json.loads(done.stdout)["archives"])
        if found != names:
            return f"the copy lists {len(found)} archive(s), the backup host {len(names)}"
        return ""
    finally:
        shutil.rmtree(work, ignore_errors=True)
