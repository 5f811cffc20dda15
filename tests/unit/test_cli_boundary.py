"""The CLI boundary: exit codes, messages and --json shapes (no Docker needed)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest

from coophost import __version__
from coophost.cli.main import cli, main
from coophost.errors import BusyError, HostUnreachable, Interrupted, ValidationError


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coophost", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=60, check=False)


def test_version() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"coophost, version {__version__}"


def test_unknown_command_is_a_usage_error() -> None:
    proc = run_cli("frobnicate")
    assert proc.returncode == 2
    assert "No such command 'frobnicate'" in proc.stderr


def test_missing_inventory_names_the_file(tmp_path: Path) -> None:
    proc = run_cli("-i", str(tmp_path / "nowhere"), "host", "check")
    assert proc.returncode == 2
    assert f"{tmp_path / 'nowhere' / 'hosts.yml'}: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_inventory_from_environment(tmp_path: Path) -> None:
    proc = run_cli("host", "check", env={"COOPHOST_INVENTORY": str(tmp_path / "envcoop")})
    assert proc.returncode == 2
    assert "envcoop" in proc.stderr


def test_bad_lab_name_is_refused() -> None:
    proc = run_cli("lab", "status", "--name", "../etc")
    assert proc.returncode == 2
    assert "lab name '../etc' is not allowed" in proc.stderr


def test_no_docker_engine_gives_the_fix_and_exit_2(tmp_path: Path) -> None:
    sock = tmp_path / "no-engine.sock"
    proc = run_cli("-i", str(tmp_path / "coop"), "lab", "up", "--name", "nodocker",
                   env={"DOCKER_HOST": f"unix://{sock}"})
    assert proc.returncode == 2, proc.stderr
    assert "no Docker engine answers" in proc.stderr
    assert "apt-get install -y docker.io" in proc.stderr
    assert not (tmp_path / "coop").exists(), "nothing is written when the engine is missing"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_host_exits_4_with_json_report(tmp_path: Path) -> None:
    port = _closed_port()
    (tmp_path / "hosts.yml").write_text(
        "all:\n  hosts:\n    far:\n      ansible_host: 127.0.0.1\n"
        f"      ansible_port: {port}\n      ansible_user: coophost\n")
    proc = run_cli("-i", str(tmp_path), "host", "check", "--json")
    assert proc.returncode == 4
    [report] = json.loads(proc.stdout)
    assert report["host"] == "far" and report["address"] == f"127.0.0.1:{port}"
    assert report["reachable"] is False and report["ok"] is False
    assert "unreachable" in report["error"]
    assert set(report) >= {"os", "python", "privilege", "disk_free_gb", "mem_total_mb",
                           "mem_available_mb", "host_key"}


def test_unknown_host_name_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    h1: {ansible_host: 127.0.0.1}\n")
    proc = run_cli("-i", str(tmp_path), "host", "check", "h9")
    assert proc.returncode == 2
    assert "no host 'h9' in hosts.yml" in proc.stderr


def test_completion_script_is_printed() -> None:
    proc = run_cli("completion", "bash")
    assert proc.returncode == 0
    assert "_COOPHOST_COMPLETE=bash_complete" in proc.stdout


@pytest.mark.parametrize(("error", "code"), [
    (ValidationError("members/a.yml", "services.mail.quota", "-1", "must be positive"), 2),
    (BusyError("another coophost holds the lock"), 3),
    (HostUnreachable("h1: unreachable"), 4),
    (Interrupted("canceled"), 130),
    (RuntimeError("boom"), 1),
    (KeyboardInterrupt(), 130),
])
def test_error_boundary_maps_exceptions_to_exit_codes(
        error: BaseException, code: int, capsys: pytest.CaptureFixture[str]) -> None:
    @click.command("explode")
    def explode() -> None:
        raise error

    cli.add_command(explode)
    try:
        assert main(["explode"]) == code
    finally:
        cli.commands.pop("explode")
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if isinstance(error, ValidationError):
        assert "members/a.yml: services.mail.quota: '-1': must be positive" in err


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    @click.command("explode")
    def explode() -> None:
        raise RuntimeError("boom")

    cli.add_command(explode)
    try:
        assert main(["--debug", "explode"]) == 1
    finally:
        cli.commands.pop("explode")
    assert "Traceback" in capsys.readouterr().err
