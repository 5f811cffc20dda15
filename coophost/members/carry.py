"""Moves and evacuations that carry the data: a unit's files follow it to its new host.

`member move` records the new placement and the host the unit left (`moved:` in the member
file), deploys the new host (the unit is made there, empty, and takes its mail) and then the
old one (the unit's folder goes into the service's `data.archive`, its logins end there, and
mail still arriving there is relayed to the new host), and then copies the archived folder
into the unit's folder on the new host. The copy is a merge that never overwrites a file the
new host has already (mail delivered there meanwhile); every copied file is then compared by
SHA-256 on both hosts. Nothing is read from a folder that still changes: the old host stopped
using it before the copy starts.

When the old host cannot be reached, the data comes from the unit's latest backup instead:
restored on the controller, checked against the archive's manifest, then pushed. `host
evacuate` does that for every unit of a host that is gone. A unit with databases (catalogue
`data.dumps`) also gets each database back from the archive's dump: the dumps are copied into
a new root-only folder on the new host, and its `coophost-backup load-dumps` loads each beside
the database the deploy made, checks that it dumps back identically, and swaps it in.

Each step can be run again: the merge skips what is there, so a move that was interrupted is
finished by running the same command again.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from coophost.backup.model import unit_paths
from coophost.errors import CoophostError, ExternalCommandError, UsageError
from coophost.layout import KNOWN_HOSTS_FILE, STATE_DIR
from coophost.registry.loader import Loaded

ARCHIVED = re.compile(r"^(?P<name>.+)\.(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?$")
CHUNK = 1 << 16


@dataclass
class CopyReport:
    """What one data path's copy did."""

    path: str
    source: str = ""
    files: int = 0
    kept: int = 0  # already on the new host (written there since the move): left as they are
    size: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"path": self.path, "source": self.source, "files": self.files,
                "kept": self.kept, "bytes": self.size, "problems": self.problems}


@dataclass
class CarryReport:
    """What carrying one unit's data did."""

    member: str
    service: str
    to_host: str
    from_host: str
    via: str = ""  # "host" (the old host's copy) or "backup" (the latest archive)
    archive: str = ""  # the backup archive used, and its age
    age_hours: float | None = None
    copies: list[CopyReport] = field(default_factory=list)
    error: str = ""
    databases: list[dict[str, Any]] = field(default_factory=list)  # loaded from dumps

    @property
    def ok(self) -> bool:
        """Whether every path was copied and verified."""
        return not self.error and all(not c.problems for c in self.copies)

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"member": self.member, "service": self.service, "from": self.from_host,
                "to": self.to_host, "via": self.via, "archive": self.archive,
                "age_hours": self.age_hours, "ok": self.ok, "error": self.error,
                "copies": [c.as_dict() for c in self.copies], "databases": self.databases}


# ---- pure helpers ------------------------------------------------------------------------------


def newest_archived(names: list[str], name: str) -> str | None:
    """The newest of the archive folder names `<name>.<UTC stamp>[-n]` (None when none)."""
    found = []
    for candidate in names:
        match = ARCHIVED.match(candidate)
        if match and match["name"] == name:
            found.append((match["stamp"], int(match["n"] or 0), candidate))
    return max(found)[2] if found else None


def parse_sums(text: str, root: str) -> dict[str, str]:
    r"""`sha256sum` output for files under `root` -> {path relative to root: digest}.

    sha256sum escapes a name holding a backslash or a newline (the line starts with a backslash).
    """
    sums: dict[str, str] = {}
    prefix = root.rstrip("/") + "/"
    for line in text.splitlines():
        if not line:
            continue
        escaped = line.startswith("\\")
        if escaped:
            line = line[1:]
        digest, _, name = line.partition("  ")
        if escaped:
            name = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "\\": "\\"}.get(
                m[1], m[0]), name)
        if len(digest) != 64 or not name.startswith(prefix):
            raise ValueError(f"unexpected sha256sum line: {line[:120]!r}")
        sums[name[len(prefix):]] = digest
    return sums


def check_copy(source: dict[str, str], before: dict[str, str], after: dict[str, str],
               report: CopyReport) -> None:
    """Judge a merge: every source file is on the target, identical unless it was there before."""
    missing, differ = [], []
    for name, digest in sorted(source.items()):
        if name in before:
            report.kept += 1
        elif name not in after:
            missing.append(name)
        elif after[name] != digest:
            differ.append(name)
    report.files = len(source) - report.kept
    if missing:
        report.problems.append(f"{len(missing)} file(s) missing on the new host, e.g. "
                               + ", ".join(missing[:3]))
    if differ:
        report.problems.append(f"{len(differ)} file(s) differ on the new host, e.g. "
                               + ", ".join(differ[:3]))


# ---- on the hosts ------------------------------------------------------------------------------


def run_checked(client: Any, argv: list[str], what: str, timeout: float = 600.0) -> str:
    """Run `argv` on a host; its stdout, or an error naming `what` when it exits non-zero."""
    from coophost.ssh import run_argv

    status, out, err = run_argv(client, argv, timeout=timeout)
    if status != 0:
        raise ExternalCommandError(f"{what}: `{shlex.join(argv)}` exited {status}: "
                                   f"{err.strip()[-300:]}")
    return out


def remote_sums(client: Any, root: str, what: str) -> dict[str, str]:
    """SHA-256 of every regular file under `root` on a host ({} when `root` is absent)."""
    if not folder_exists(client, root):
        return {}
    out = run_checked(client, ["sudo", "-n", "find", root, "-type", "f", "-exec", "sha256sum", "--",
                        "{}", "+"], what, timeout=3600)
    return parse_sums(out, root)


def folder_exists(client: Any, path: str) -> bool:
    """Whether `path` is a folder on the host."""
    from coophost.ssh import run_argv

    status, _, _ = run_argv(client, ["sudo", "-n", "test", "-d", path])
    return status == 0


def _pump(reader: Callable[[int], bytes], channel: Any) -> int:
    """Copy bytes from `reader` into a channel's stdin; return how many."""
    total = 0
    while True:
        block = reader(CHUNK)
        if not block:
            break
        channel.sendall(block)
        total += len(block)
    channel.shutdown_write()
    return total


@contextmanager
def _receiving(client: Any, target: str) -> Iterator[Any]:
    """A channel running tar on the target host that merges a stream into `target`."""
    channel = client.get_transport().open_session()
    channel.exec_command(shlex.join([
        "sudo", "-n", "tar", "--extract", "--file=-", f"--directory={target}",
        "--skip-old-files", "--preserve-permissions",
        "--numeric-owner"]))
    errors: list[bytes] = []
    drain = threading.Thread(target=lambda: errors.append(_read_all(channel.recv_stderr)),
                             daemon=True)
    drain.start()
    yield channel
    status = channel.recv_exit_status()
    drain.join(timeout=30)
    if status != 0:
        raise ExternalCommandError(f"tar on the new host exited {status}: "
                                   f"{b''.join(errors).decode(errors='replace')[-300:]}")


def _read_all(reader: Callable[[int], bytes]) -> bytes:
    parts: list[bytes] = []
    while True:
        block = reader(CHUNK)
        if not block:
            return b"".join(parts)
        parts.append(block)


def pipe_between(source: Any, folder: str, target: Any, into: str) -> int:
    """Stream `folder` (a tar on the source host) into `into` on the target; bytes moved."""
    sender = source.get_transport().open_session()
    sender.exec_command(shlex.join(["sudo", "-n", "tar", "--create", "--file=-",
                                    f"--directory={folder}", "--numeric-owner", "."]))
    with _receiving(target, into) as receiver:
        moved = _pump(sender.recv, receiver)
    status = sender.recv_exit_status()
    if status != 0:
        err = _read_all(sender.recv_stderr).decode(errors="replace")
        raise ExternalCommandError(f"tar on the old host exited {status}: {err[-300:]}")
    return moved


def push_local(folder: Path, target: Any, into: str) -> int:
    """Stream the local `folder` (tar here) into `into` on the target host; bytes moved."""
    tar = shutil.which("tar") or "tar"
    with subprocess.Popen([tar, "--create", "--file=-", f"--directory={folder}",
                           "--numeric-owner", "."], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as local:
        assert local.stdout is not None
        with _receiving(target, into) as receiver:
            moved = _pump(local.stdout.read, receiver)
        err = local.stderr.read().decode(errors="replace") if local.stderr else ""
    if local.returncode != 0:
        raise ExternalCommandError(f"tar here exited {local.returncode}: {err[-300:]}")
    return moved


def linked_folders(client: Any, root: str, what: str) -> list[str]:
    """Symbolic links to folders under `root` on a host: tar, as root, would write through them."""
    if not folder_exists(client, root):
        return []
    out = run_checked(client, ["sudo", "-n", "find", root, "-type", "l", "-xtype", "d", "-print"],
               what)
    return out.splitlines()


def merge_into(client: Any, path: str, host: str, source: dict[str, str],
               send: Callable[[str], int], copy: CopyReport) -> None:
    """Merge one stream into `path` on `host`, owned as `path` is, and judge the merge.

    `send(path)` streams the files (whose digests are `source`) into `path`. A folder that
    holds a symbolic link to a folder is refused before anything is written: root's tar
    would follow it out of the unit.
    """
    linked = linked_folders(client, path, f"{host}: look for links in {path}")
    if linked:
        copy.problems.append(f"{path} on {host} holds a link to a folder ({linked[0]}): "
                             "nothing copied")
        return
    before = remote_sums(client, path, host)
    copy.size = send(path)
    run_checked(client, ["sudo", "-n", "chown", "-R", f"--reference={path}", path],
         f"{host}: chown {path}")
    check_copy(source, before, remote_sums(client, path, host), copy)


def local_sums(root: Path) -> dict[str, str]:
    """SHA-256 of every regular file under a local folder (relative names)."""
    from coophost.backup.ops import sha256_file

    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


# ---- the whole carry ----------------------------------------------------------------------------


def _deploy(root: Path, hosts: set[str], loaded: Loaded, gone: str = ""
            ) -> dict[str, tuple[int, str]]:
    """Deploy `hosts` and the backup hosts (what changed there); the failures among `hosts`.

    The backup hosts come along: a host that held no unit before is let in to push backups;
    a backup host's failure holds nothing back (its backups wait for it). Each failure maps
    a host to its exit code (4 unreachable, or 1 failed) and its summary. A `gone` host (one
    being evacuated) is left out even when it is a backup host.
    """
    from coophost.backup.model import backup_hosts
    from coophost.deploy.engine import DeployOptions, deploy
    from coophost.deploy.executor import mitogen_available
    from coophost.deploy.jobs import Selection
    from coophost.deploy.progress import SilentProgress
    from coophost.errors import EXIT_PENDING, EXIT_UNREACHABLE

    chosen = (frozenset(hosts) | frozenset(backup_hosts(loaded.registry.hosts))) - {gone}
    result = deploy(root, DeployOptions(selection=Selection(hosts=chosen),
                                        mitogen=mitogen_available()),
                    SilentProgress(), threading.Event())
    return {h: (EXIT_UNREACHABLE if o.status == "unreachable" else EXIT_PENDING, o.summary)
            for h, o in result.outcomes.items() if o.status != "ok" and h in hosts}


def _connect(loaded: Loaded, host: str) -> Any:
    from coophost.registry.hosts import connections
    from coophost.ssh import connect

    return connect(connections(loaded.registry.hosts)[host], loaded.root / KNOWN_HOSTS_FILE)


def _unit_facts(loaded: Loaded, slug: str, service: str) -> tuple[str, list[str], str]:
    member = loaded.registry.members[slug]
    entry = loaded.catalogue.services[service]
    paths = unit_paths(entry, member.owner, slug, [d.ascii for d in member.domains])
    return member.owner, paths, str(entry.data.get("archive") or "")


def copy_from_host(loaded: Loaded, report: CarryReport) -> None:
    """Merge the unit's archived folders on the old host into its folders on the new one."""
    owner, paths, archive = _unit_facts(loaded, report.member, report.service)
    report.via = "host"
    with _connect(loaded, report.from_host) as old, _connect(loaded, report.to_host) as new:
        for path in paths:
            copy = CopyReport(path)
            report.copies.append(copy)
            if folder_exists(old, path):
                copy.problems.append(f"{path} is still in use on {report.from_host} (its "
                                     "deploy did not archive it): nothing copied")
                continue
            listed = run_checked(
                old, ["sudo", "-n", "find", archive, "-mindepth", "1", "-maxdepth", "1",
                      "-type", "d", "-printf", "%f\\n"],
                f"{report.from_host}: list {archive}") if folder_exists(old, archive) else ""
            found = newest_archived(listed.splitlines(), posixpath.basename(path))
            if found is None:
                copy.source = f"(no copy of {owner} on {report.from_host}: nothing to carry)"
                continue
            folder = posixpath.join(archive, found)
            copy.source = f"{report.from_host}:{folder}"
            merge_into(new, path, report.to_host, remote_sums(old, folder, report.from_host),
                       partial(pipe_between, old, folder, new), copy)


def copy_from_backup(loaded: Loaded, report: CarryReport) -> None:
    """Restore the unit's latest archive of its old host here, check it, push it to the new."""
    from coophost.backup.ops import Borg, extract_and_check, parse_time, pick_archive, unit_on

    report.via = "backup"
    unit = unit_on(loaded, report.member, report.service, report.from_host)
    borg = Borg(loaded)
    scratch_base = loaded.root / STATE_DIR / "backup-scratch"
    scratch_base.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="carry-", dir=scratch_base))
    try:
        with borg.session():
            name = pick_archive(borg, unit, None)
            archives, _ = borg.archives(unit)
            stamp = next((a.get("start") or a.get("time") for a in archives
                          if a["archive"] == name), None)
            report.archive = name
            if stamp:
                report.age_hours = round((dt.datetime.now().timestamp()
                                          - parse_time(stamp)) / 3600, 2)
            drill = extract_and_check(borg, unit, name, scratch)
        if not drill.ok:
            report.error = f"the latest archive {name} does not match its manifest: " \
                           f"{drill.detail}"
            return
        with _connect(loaded, report.to_host) as new:
            for path in unit.paths:
                copy = CopyReport(path, source=f"backup {name}")
                report.copies.append(copy)
                local = scratch / path.lstrip("/")
                if not local.is_dir():
                    copy.source += " (holds nothing of it)"
                    continue
                merge_into(new, path, report.to_host, local_sums(local),
                           partial(push_local, local, new), copy)
            if unit.dump_dirs:
                load_dumps(new, report, unit.owner, scratch, unit.dump_dirs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def load_dumps(new: Any, report: CarryReport, owner: str, scratch: Path,
               dump_dirs: tuple[str, ...]) -> None:
    """Give the unit's databases on the new host the dumps restored under `scratch`.

    The dumps go into a new root-only folder there, which the host's `coophost-backup
    load-dumps` loads (each checked to dump back identically before it replaces the database
    the deploy made, which is kept) and removes.
    """
    from coophost.backup.model import INCOMING_TEMPLATE
    from coophost.backup.ops import HOST_COMMAND, host_result
    from coophost.ssh import run_argv

    given = [scratch / d.lstrip("/") for d in dump_dirs]
    if not all(folder.is_dir() for folder in given):
        report.error = f"the archive {report.archive} holds no dump of the unit's databases"
        return
    folder = run_checked(new, ["sudo", "-n", "mktemp", "-d", INCOMING_TEMPLATE],
                         f"{report.to_host}: make a folder for the dumps").strip()
    try:
        for local in given:
            push_local(local, new, folder)
    except CoophostError:
        run_argv(new, ["sudo", "-n", "rm", "-rf", "--", folder])  # load-dumps never ran
        raise
    result = host_result(*run_argv(new, ["sudo", "-n", HOST_COMMAND, "load-dumps", owner,
                                         report.service, folder], timeout=3600))
    report.databases = list(result.get("databases") or [])
    if not result.get("ok"):
        report.error = f"{report.to_host}: loading the dumps failed: {result.get('error')}"


def carry(root: Path, slug: str, service: str, progress: Callable[[str], None]
          ) -> CarryReport:
    """Finish a recorded move: deploy the new host, then the old one, then carry the data.

    The member file holds the move (`placement` and `moved:`, by `lifecycle.move`).
    """
    from coophost.desired.units import compute
    from coophost.errors import EXIT_UNREACHABLE
    from coophost.registry.loader import load_registry

    loaded = load_registry(root)
    member = loaded.registry.members[slug]
    moved = member.moved.get(service)
    if moved is None:
        raise UsageError(f"{slug}/{service} has no move recorded: nothing to carry")
    to_host = compute(loaded).units[(slug, service)].host
    report = CarryReport(slug, service, to_host, moved["from"])
    progress(f"deploying {to_host}: the unit is made there")
    code, summary = _deploy(root, {to_host}, loaded).get(to_host, (0, ""))
    if code != 0:
        report.error = f"the deploy of {to_host} failed ({summary}); fix it and run the move again"
        return report
    old_reachable = True
    if report.from_host in loaded.registry.hosts:
        progress(f"deploying {report.from_host}: the unit leaves it (archived there; its mail "
                 f"is relayed to {to_host})")
        code, summary = _deploy(root, {report.from_host}, loaded).get(report.from_host, (0, ""))
        if code == EXIT_UNREACHABLE:
            old_reachable = False
        elif code != 0:
            report.error = (f"the deploy of {report.from_host} failed ({summary}); fix it and "
                            "run the move again")
            return report
    else:
        old_reachable = False
    if old_reachable:
        progress(f"copying the data from {report.from_host} to {to_host}")
        copy_from_host(loaded, report)
    else:
        progress(f"{report.from_host} is out of reach: restoring the latest backup on {to_host}")
        copy_from_backup(loaded, report)
    return report


@dataclass
class Evacuation:
    """What `host evacuate` did: where each unit went and what its data came back from."""

    host: str
    units: list[CarryReport] = field(default_factory=list)
    deploy_error: str = ""

    @property
    def ok(self) -> bool:
        """Whether every unit is back with its data."""
        return not self.deploy_error and all(u.ok for u in self.units)

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"host": self.host, "ok": self.ok, "deploy_error": self.deploy_error,
                "units": [u.as_dict() for u in self.units]}


def evacuate(root: Path, host: str, by: str, progress: Callable[[str], None]) -> Evacuation:
    """Re-place every unit of a host that is gone and restore each from its latest backup.

    The units are placed on the other hosts of their group by free capacity (recorded in the
    member files, audited), those hosts are deployed, and each unit's latest archive (of the
    gone host's repository) is restored on the controller, checked against its manifest and
    pushed to its new host. Nothing is asked of the gone host, which keeps its entry in
    hosts.yml until `coophost host remove` (a later deploy reports it unreachable).
    """
    from coophost.lock import coop_lock
    from coophost.members.audit import audit
    from coophost.registry.edit import move_unit
    from coophost.registry.loader import load_registry, with_hosts
    from coophost.registry.placement import evacuation

    with coop_lock(root, purpose=f"host evacuate {host}"):
        loaded = load_registry(root)
        plan = evacuation(with_hosts(loaded), loaded.catalogue, host)
        for (slug, service), target in plan.items():
            move_unit(root, load_registry(root, need_hosts=False), slug, service, target)
        if plan:  # what it held is gone: if it comes back, its next deploy runs in full
            from coophost.state import StateDB

            with StateDB(root) as db:
                db.forget_host(host)
    for (slug, service), target in plan.items():
        audit(root, {"by": by, "action": "member moved", "member": slug, "service": service,
                     "from": host, "to": target, "why": f"host {host} evacuated"})
    result = Evacuation(host)
    if not plan:
        return result
    targets = sorted(set(plan.values()))
    progress(f"deploying {', '.join(targets)}: the units of {host} are made there")
    failed = {h: summary for h, (_, summary) in _deploy(root, set(targets), loaded, host).items()}
    if failed:
        result.deploy_error = "; ".join(f"{h}: {s}" for h, s in sorted(failed.items()))
    loaded = load_registry(root)
    for (slug, service), target in plan.items():
        report = CarryReport(slug, service, target, host)
        result.units.append(report)
        if target in failed:
            report.error = f"{target} was not deployed: {failed[target]}"
            continue
        _, paths, _ = _unit_facts(loaded, slug, service)
        if not paths:
            continue  # a service without data comes back whole from its registry entry
        progress(f"{slug}/{service}: restoring its latest backup on {target}")
        try:
            copy_from_backup(loaded, report)
        except CoophostError as exc:
            report.error = str(exc)
    return result
