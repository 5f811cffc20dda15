"""Registry files that are not plain, bounded, readable files are refused by name, unread;
bad dates and absurd integers are validation errors (exit 2); one member's broken file shuts
no other member out of the member shell; a damaged state.db is exit 2 and "maintenance"."""

from __future__ import annotations

import errno
import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from coophost.members.shell import run as shell_run

BREAD = "members/bread-coop.yml"


def _cli_with_timeout(coop: Path, *args: str, timeout: float = 60) -> tuple[int, str]:
    """Run the CLI in a child process: a read that hangs (a FIFO) fails the test, not the run."""
    done = subprocess.run([sys.executable, "-c", "import sys; from coophost.cli.main import main; "
                           "sys.exit(main(sys.argv[1:]))", "-i", str(coop), *args],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "COOPHOST_VAULT_PASSWORD": "unit-test"})
    return done.returncode, done.stdout + done.stderr


def _replace_with(coop: Path, kind: str) -> None:
    """Turn members/bread-coop.yml into a file of `kind` (its content kept elsewhere)."""
    path = coop / BREAD
    text = path.read_text()
    path.unlink()
    if kind == "symlink":
        target = coop.parent / "outside.yml"
        target.write_text(text)  # a valid member file, outside the co-op: still refused
        path.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "device":
        try:
            os.mknod(path, 0o600 | 0o020000, os.makedev(1, 3))  # a character device
        except PermissionError:
            pytest.skip("this machine may not make device nodes (needs CAP_MKNOD)")
    elif kind == "oversized":
        with path.open("wb") as handle:
            handle.truncate(50 * 1024 * 1024)  # sparse: 50 MiB of zeros, never read
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(("kind", "said"), [
    ("symlink", "it is a symbolic link"),
    ("fifo", "it is a named pipe (FIFO)"),
    ("folder", "it is a folder"),
    ("device", "it is a character device"),
    ("oversized", "it has 52428800 bytes (at most 262144)"),
])
def test_odd_member_files_are_refused_by_name_without_being_read(coop: Path, kind: str,
                                                                 said: str) -> None:
    _replace_with(coop, kind)
    code, output = _cli_with_timeout(coop, "member", "list")
    assert code == 2, output
    assert f"{BREAD}: refused, {said}" in output
    assert "internal error" not in output


def test_an_unreadable_member_file_is_refused_by_name(coop: Path, cli,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = coop / BREAD
    if os.geteuid() != 0:
        path.chmod(0)
    else:  # root reads any file: play the kernel's refusal for this one file
        real_open = os.open

        def refusing_open(file, flags, *args):  # type: ignore[no-untyped-def]
            if Path(file) == path:
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return real_open(file, flags, *args)

        monkeypatch.setattr(os, "open", refusing_open)
    code, _, err = cli("-i", str(coop), "--debug", "member", "list")
    assert code == 2
    assert f"{BREAD}: refused, it cannot be read (permission denied)" in err


@pytest.mark.parametrize("name", ["coop.yml", "hosts.yml"])
def test_coop_and_hosts_files_are_read_the_same_careful_way(coop: Path, name: str) -> None:
    path = coop / name
    path.unlink()
    os.mkfifo(path)
    code, output = _cli_with_timeout(coop, "plan")
    assert code == 2 and f"{name}: refused, it is a named pipe (FIFO)" in output


def _set(coop: Path, file: str, old: str, new: str) -> None:
    path = coop / file
    text = path.read_text()
    assert old in text, (file, old)
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(("file", "old", "new", "said"), [
    (BREAD, "status: active", "status: departed\ndeparted_on: 2024-13-45",
     "members/bread-coop.yml: departed_on: '2024-13-45': a departed member needs its "
     "departure date"),
    (BREAD, "status: active", "status: departed\ndeparted_on: 9999-12-31",
     "members/bread-coop.yml: departed_on: '9999-12-31': must be a date from 2000-01-01"),
    (BREAD, "status: active", "status: departed\ndeparted_on: 0000-01-01",
     "members/bread-coop.yml: departed_on: '0000-01-01': a departed member needs"),
    ("members/ada-books.yml", "quota_mb: 1024", "quota_mb: " + "9" * 5000,
     "members/ada-books.yml: services.mail.quota_mb: '99999"),
    ("hosts.yml", "ram_mb: 4096", "ram_mb: " + "9" * 30,
     "hosts.yml: hosts.h1.coophost_capacity.ram_mb: 999999999999999999999999999999: must be "
     "at most"),
    ("hosts.yml", "ansible_port: 40001", "ansible_port: 99999999999999999999",
     "hosts.yml: hosts.h1.ansible_port: 99999999999999999999: must be at most 65535"),
    ("coop.yml", "quota_mb: 4096}", "quota_mb: " + "9" * 40 + "}",
     "coop.yml: allowances.services.mail.quota_mb: 9999999999999999999999999999999999999999: "
     "must be at most 1000000000"),
])
def test_bad_dates_and_absurd_integers_are_validation_errors(coop: Path, cli, file: str,
                                                             old: str, new: str,
                                                             said: str) -> None:
    _set(coop, file, old, new)
    for command in (("plan",), ("members", "purge", "--dry-run")):
        code, out, err = cli("-i", str(coop), *command)
        assert code == 2, (command, out, err)
        assert said in err, err
        assert "internal error" not in err


# ---- the member shell: another member's broken file shuts nobody out, shows nothing ----

SECRET_VALUE = "bread-secret-value-7f3a"


def _hung(*_: object) -> None:
    raise TimeoutError("the member shell hung (a read that never returns)")


def shell(coop: Path, command: str, slug: str = "ada-books") -> tuple[int, str, str]:
    """Run a member command in-process, failing (not hanging) after 30 s."""
    import contextlib
    import signal

    out = io.BytesIO()
    err = io.StringIO()
    previous = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(30)
    try:
        with contextlib.redirect_stderr(err):
            code = shell_run(coop, slug, command, out)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, out.getvalue().decode(), err.getvalue()


@pytest.mark.parametrize("breakage", ["invalid", "fifo", "symlink"])
def test_another_members_broken_file_neither_shuts_out_nor_shows(coop: Path,
                                                                 breakage: str) -> None:
    if breakage == "invalid":
        _set(coop, BREAD, "status: active", f"status: {SECRET_VALUE}")
    else:
        _replace_with(coop, breakage)
    for command in ("status", "status --json", "services", "dns"):
        code, out, err = shell(coop, command)
        assert code == 0, (command, err)
        assert "bread-coop" not in out + err and SECRET_VALUE not in out + err
    code, _, err = shell(coop, "request mail --set quota_mb=100")
    assert code == 0, err
    code, out, _ = shell(coop, "status")
    assert "request 1: mail pending" in out
    # the sysadmins' own commands still refuse the broken file, by name
    from coophost.errors import ConfigError
    from coophost.registry.loader import load_registry

    with pytest.raises(ConfigError, match="bread-coop"):
        load_registry(coop, need_hosts=False)


def test_the_member_whose_file_is_broken_is_told_about_its_own_file(coop: Path) -> None:
    _set(coop, BREAD, "status: active", "status: sleeping")
    code, _, err = shell(coop, "status", slug="bread-coop")
    assert code == 2
    assert "members/bread-coop.yml: status: 'sleeping'" in err


def test_a_broken_coop_file_reads_as_maintenance_to_members(coop: Path) -> None:
    _set(coop, "coop.yml", "\nallowances:\n", f"\nallowances:\n  {SECRET_VALUE}: 1\n")
    code, out, err = shell(coop, "status")
    assert code == 2
    assert "the co-op is under maintenance" in err
    assert SECRET_VALUE not in out + err and "coop.yml" not in err


# ---- a damaged state.db ----

def _applied_state(coop: Path, cli) -> Path:
    """A state.db holding applied rows, checkpointed into the main file."""
    from coophost.state import StateDB

    assert cli("-i", str(coop), "plan")[0] in (0, 1)
    with StateDB(coop) as db:
        db.record_host_applied("h1", "x" * 64, [("ada-books", "mail", "y" * 64)] * 1)
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return coop / ".coophost" / "state.db"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "zeroed-pages"])
def test_a_damaged_state_db_is_exit_2_naming_the_file_and_what_to_do(coop: Path, cli,
                                                                     damage: str) -> None:
    path = _applied_state(coop, cli)
    raw = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(os.urandom(len(raw)))
    elif damage == "truncated":
        path.write_bytes(raw[:200])
    else:
        path.write_bytes(raw[:100] + b"\xff" * (len(raw) - 100))
    for command in (("plan",), ("host", "remove", "h3")):
        code, out, err = cli("-i", str(coop), *command)
        assert code == 2, (command, out, err)
        assert "state.db: the co-op's state database is damaged" in err
        assert "move it aside" in err and "internal error" not in err
    code, out, err = shell(coop, "status")
    assert code == 2
    assert "the co-op is under maintenance" in err
    for word in ("database", "sqlite", "malformed", "state.db"):
        assert word not in (out + err).lower().replace("under maintenance", "")


def test_moving_a_damaged_state_db_aside_starts_afresh(coop: Path, cli) -> None:
    path = _applied_state(coop, cli)
    path.write_bytes(b"not a database at all" * 100)
    assert cli("-i", str(coop), "plan")[0] == 2
    for extra in path.parent.glob("state.db*"):
        extra.rename(extra.with_name(extra.name + ".damaged"))
    assert sqlite3.connect(path.with_name("state.db.damaged")) is not None
    code, out, _ = cli("-i", str(coop), "plan")
    assert code == 1 and "to add" in out


def test_a_conflict_between_other_members_neither_shuts_out_nor_shows(coop: Path) -> None:
    """Two other members claim one domain (a hand edit): a third member is served, and sees
    neither of them; the sysadmins' commands still refuse the conflict by name."""
    _set(coop, "members/cycle-works.yml", "domains:\n", "domains:\n  - bread-coop.test\n")
    code, out, err = shell(coop, "status")
    assert code == 0, err
    assert "bread-coop" not in out + err and "cycle-works" not in out + err
    from coophost.errors import ConfigError
    from coophost.registry.loader import load_registry

    with pytest.raises(ConfigError, match=r"bread-coop\.test"):
        load_registry(coop, need_hosts=False)
