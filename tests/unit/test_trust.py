"""Pinned host keys reach every connection's settings; known_hosts lines coophost cannot check
are refused with their line number; run folders of killed processes do not outlive the next run.

(The lab proves the pinning with a changed key: tests/integration/test_trust_hostkeys.py.)
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from coophost.deploy.runner import ansible_env, pinned_extravars
from coophost.errors import ConfigError
from coophost.fsutil import ALIVE_FILE, private_folder, sweep_dead_folders
from coophost.ssh import known_hosts_entries, validate_known_hosts

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINCPh5kVMm9QLyGgnYPiREYcSrTUXCk+jPPfd7JxHY8W"


def test_ansible_checks_host_keys_against_the_coops_known_hosts(tmp_path: Path) -> None:
    env = ansible_env(tmp_path)
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"  # ansible-runner sets False otherwise
    args = shlex.split(env["ANSIBLE_SSH_ARGS"])
    assert f"UserKnownHostsFile={tmp_path.resolve() / 'known_hosts'}" in args
    assert "StrictHostKeyChecking=yes" in args and "GlobalKnownHostsFile=/dev/null" in args
    assert "ControlPersist=120s" in args, "ansible.cfg's own ssh_args are kept"
    extra = pinned_extravars(tmp_path)  # extra vars: no inventory variable can override them
    assert extra["ansible_host_key_checking"] is True
    assert extra["ansible_ssh_args"] == env["ANSIBLE_SSH_ARGS"]


def test_a_good_known_hosts_file_passes(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"# pinned\n\n[127.0.0.1]:2222 {ED25519}\nh1,h1.example.coop {ED25519} c\n")
    validate_known_hosts(path)
    validate_known_hosts(tmp_path / "absent")  # pins nothing: every host is refused later


@pytest.mark.parametrize(("line", "problem"), [
    ("h1 ssh-ed25519", "2 field(s)"),
    ("h1", "1 field(s)"),
    ("h1 ssh-ed25519 !!!notbase64", "not a valid host key"),
    ("h1 ssh-ed25519 AAAA", "not a valid host key"),
    ("h1 ssh-rsa " + ED25519.split()[1], "not a valid host key"),
    ("h1 ssh-foo " + ED25519.split()[1], "key type 'ssh-foo'"),
    ("@revoked h1 " + ED25519, "'@revoked' lines are not supported"),
])
def test_a_known_hosts_line_coophost_cannot_check_is_refused(tmp_path: Path, line: str,
                                                             problem: str) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"# pinned\nh0 {ED25519}\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        validate_known_hosts(path)
    assert f"{path}: line 3: " in caught.value.message and problem in caught.value.message


def test_a_persons_own_known_hosts_keeps_what_it_can_read(tmp_path: Path) -> None:
    """`coophost --remote` reads a member's ~/.ssh/known_hosts: other tools' lines are skipped."""
    path = tmp_path / "known_hosts"
    hashed = "|1|JfKTdBh7rNbXkVAQCRp4OQoPfmI=|USECr3SWf1JUPsms5AqfD5QfxkM="
    path.write_text(f"@cert-authority *.example {ED25519}\nh1 sk-ssh-x AAAA\n"
                    f"{hashed} {ED25519}\ncontrol.example {ED25519}\n")
    kept = known_hosts_entries(path, strict=False)
    assert [e.hostnames for e in kept] == [[hashed], ["control.example"]]
    with pytest.raises(ConfigError):
        known_hosts_entries(path, strict=True)


@pytest.mark.parametrize("command", [["host", "check"], ["deploy"]])
def test_a_malformed_known_hosts_is_exit_2_naming_the_line(coop: Path, cli,
                                                           command: list[str]) -> None:
    (coop / "known_hosts").write_text(f"[127.0.0.1]:40001 {ED25519}\n[127.0.0.1]:40002 x !\n")
    members = {p.name: p.read_text() for p in (coop / "members").glob("*.yml")}
    code, out, err = cli("-i", str(coop), *command)
    assert code == 2, out + err
    assert f"{coop / 'known_hosts'}: line 2" in " ".join(err.split())
    assert "internal error" not in err
    assert members == {p.name: p.read_text() for p in (coop / "members").glob("*.yml")}, \
        "nothing is written (no placement recorded)"


def test_a_malformed_known_hosts_stops_a_deploy_before_a_life_id_is_written(coop: Path,
                                                                             cli) -> None:
    ada = coop / "members" / "ada-books.yml"
    ada.write_text("".join(line for line in ada.read_text().splitlines(keepends=True)
                           if not line.startswith("id:")))
    before = ada.read_text()
    (coop / "known_hosts").write_text("[127.0.0.1]:40002 x !\n")
    code, out, err = cli("-i", str(coop), "deploy")
    assert code == 2, out + err
    assert ada.read_text() == before, "no life id written"


def test_a_deploy_with_nothing_to_do_contacts_no_host_and_loads_no_ssh(coop: Path,
                                                                      record_applied) -> None:
    # a first deploy records lives and placements (its hosts are not there: exit 4)
    assert subprocess.run([sys.executable, "-m", "coophost", "-i", str(coop), "deploy"],
                          capture_output=True, check=False).returncode == 4
    code = ("import sys\nfrom coophost.cli.main import main\n"
            "try:\n    main(['-i', sys.argv[1], 'deploy'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\n"
            "assert 'paramiko' not in sys.modules, 'paramiko imported'\n")
    (coop / "known_hosts").write_text("[127.0.0.1]:40002 x !\n")  # never read: nothing to do
    record_applied(coop)
    proc = subprocess.run([sys.executable, "-c", code, str(coop)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Nothing to deploy" in proc.stdout



HOLDER = textwrap.dedent("""
    import sys, time
    from coophost.fsutil import private_folder
    with private_folder(sys.argv[1]) as folder:
        print(folder, flush=True)
        time.sleep(600)
""")


def _holder(prefix: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, prefix], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_a_killed_runs_folder_is_removed_by_the_next_run_and_a_live_one_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    prefix = "coophost-run-"
    killed, dead_folder = _holder(prefix, env)
    live, live_folder = _holder(prefix, env)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        assert dead_folder.is_dir() and (dead_folder / ALIVE_FILE).is_file(), \
            "a killed process leaves its folder behind"
        foreign = tmp_path / f"{prefix}foreign"  # no lock file: not made by coophost
        foreign.mkdir()
        with private_folder(prefix) as mine:
            assert mine.is_dir()
            assert not dead_folder.exists(), "the next run removes the dead run's folder"
            assert live_folder.is_dir(), "a running process keeps its folder"
            assert foreign.is_dir()
            assert sweep_dead_folders(prefix) == [], "the running block's own folder is kept"
        assert not mine.exists()
    finally:
        live.kill()
        live.wait(10)
