"""Trust on real lab hosts: a host whose key is not the pinned one gets no login from any of
coophost's connections (deploy with mitogen, without it, in batch mode, and Ansible itself);
deploy's --wait, --parallel and killed runs; root cannot log in; lab private keys are 0600."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coophost.deploy.runner import run_playbook
from coophost.fsutil import ALIVE_FILE
from coophost.lab.keys import ssh_keypair
from coophost.registry.hosts import HostEntry, load_hosts
from tests.integration.conftest import COOPHOST, RUNNER_COPIES, LabInfo, record

pytestmark = pytest.mark.lab

VICTIM = "h2"
OTHERS = ("h1", "h3")


def container(lab: LabInfo, host: str) -> str:
    return f"coophost-{lab.name}-{host}"


def sshd_log(lab: LabInfo, host: str, since: float) -> list[str]:
    """sshd's journal lines on `host` since `since` (epoch seconds)."""
    proc = subprocess.run(["docker", "exec", container(lab, host), "journalctl", "-u", "ssh",
                           "--since", f"@{int(since)}", "--no-pager", "-o", "cat"],
                          capture_output=True, text=True, check=True)
    return proc.stdout.splitlines()


def logins(lab: LabInfo, host: str, since: float) -> list[str]:
    return [line for line in sshd_log(lab, host, since) if line.startswith("Accepted ")]


def entry(lab: LabInfo, host: str) -> HostEntry:
    return {e.name: e for e in load_hosts(lab.inventory)}[host]


@dataclass
class ChangedKey:
    """The victim's pinned key replaced by another valid key, since `since`."""

    host: str
    since: float


@pytest.fixture
def changed_key(lab: LabInfo) -> Iterator[ChangedKey]:
    """Pin another (valid) key for the victim in the co-op's known_hosts; restore it after."""
    known = lab.inventory / "known_hosts"
    original = known.read_text()
    target = entry(lab, VICTIM)
    prefix = f"[{target.address}]:{target.port} "
    other = " ".join(ssh_keypair("not-the-host").public.split()[:2])
    lines = [prefix + other if line.startswith(prefix) else line
             for line in original.splitlines()]
    assert lines != original.splitlines(), f"no pinned line for {VICTIM} in {known}"
    time.sleep(1)  # the journal is read by the second: nothing of before counts
    since = time.time()
    known.write_text("\n".join(lines) + "\n")
    try:
        yield ChangedKey(VICTIM, since)
    finally:
        known.write_text(original)


def deploy_json(lab: LabInfo, *args: str) -> tuple[int, dict[str, object]]:
    proc = lab.cli("deploy", "--json", *args)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_lab_private_keys_are_written_0600(lab: LabInfo) -> None:
    workdir = lab.inventory / ".coophost" / "lab"
    keys = [p for p in workdir.rglob("*") if p.is_file() and not p.is_symlink()
            and b"PRIVATE KEY" in p.read_bytes()[:4096]]
    assert len(keys) >= 3, f"the lab's client, CA and ACME keys under {workdir}: {keys}"
    loose = {str(p): oct(p.stat().st_mode & 0o777) for p in keys
             if p.stat().st_mode & 0o777 != 0o600}
    assert not loose, f"private keys readable by others: {loose}"


PING = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: A command that runs only after a login
      ansible.builtin.command: "true"
      changed_when: false
"""


@pytest.mark.parametrize("strategy", ["linear", "mitogen_linear"])
def test_ansible_itself_refuses_a_changed_key(lab: LabInfo, changed_key: ChangedKey,
                                              tmp_path: Path, strategy: str) -> None:
    """Without deploy's own key check: Ansible's connection refuses the host by itself."""
    from coophost.deploy.executor import mitogen_env

    playbook = tmp_path / "ping.yml"
    playbook.write_text(PING)
    env = mitogen_env() if strategy.startswith("mitogen") else {"ANSIBLE_STRATEGY": strategy}
    result = run_playbook(playbook, lab.inventory, limit=[changed_key.host, OTHERS[0]],
                          envvars=env)
    assert result.hosts_with("dark") == [changed_key.host], result.stats
    assert result.hosts_with("ok") == [OTHERS[0]], result.stats
    assert logins(lab, changed_key.host, changed_key.since) == []
    assert logins(lab, OTHERS[0], changed_key.since), "the other host's login is in its journal"


@pytest.mark.parametrize(("flags", "others"), [
    ([], OTHERS),
    (["--no-mitogen"], OTHERS[:1]),  # the slow way: one other host is enough
    (["--mode", "per-host"], OTHERS),
], ids=["mitogen", "no-mitogen", "per-host"])
def test_deploy_refuses_a_changed_key_and_deploys_the_others(
        lab: LabInfo, changed_key: ChangedKey, flags: list[str],
        others: tuple[str, ...]) -> None:
    before = set(RUNNER_COPIES.iterdir())
    hosts = [a for h in (*others, changed_key.host) for a in ("--host", h)]
    code, result = deploy_json(lab, "--all", *hosts, *flags)
    assert code == 4, result
    outcomes = result["hosts"]
    assert isinstance(outcomes, dict)
    victim = outcomes[changed_key.host]
    assert victim["status"] == "unreachable", result
    assert "host key mismatch" in victim["summary"] and changed_key.host in victim["summary"]
    assert sorted(outcomes) == sorted([*others, changed_key.host]), result
    assert all(outcomes[h]["status"] == "ok" for h in others), result
    assert logins(lab, changed_key.host, changed_key.since) == [], "the victim saw a login"
    assert logins(lab, OTHERS[0], changed_key.since), "the others were logged into"
    # What each way of running really did:
    jobs = sorted(p.name for p in set(RUNNER_COPIES.iterdir()) - before)
    if flags == ["--mode", "per-host"]:
        assert len(jobs) == len(others), f"per host: one ansible-runner job each: {jobs}"
    else:
        assert len(jobs) == 1, f"batch (the default): one ansible-runner job for all: {jobs}"
    full = subprocess.run(["docker", "exec", container(lab, OTHERS[0]), "journalctl",
                           "--since", f"@{int(changed_key.since)}", "--no-pager"],
                          capture_output=True, text=True, check=True).stdout
    if flags == ["--no-mitogen"]:
        assert "mitogen:" not in full, "--no-mitogen ran mitogen"
    else:
        assert "mitogen:" in full, "mitogen's strategy runs by default"


def _alive_folders(pid: int) -> list[Path]:
    found = []
    for prefix in ("coophost-run-", "coophost-job-"):
        for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
            try:
                if (folder / ALIVE_FILE).read_text().strip() == str(pid):
                    found.append(folder)
            except OSError:
                continue
    return found


def _users_of(folders: list[Path]) -> list[int]:
    """Processes whose environment names one of `folders` (ansible-runner's children)."""
    marks = [str(f).encode() for f in folders]
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            data = environ.read_bytes()
        except OSError:
            continue
        if any(mark in data for mark in marks):
            found.append(int(environ.parent.name))
    return found


def _wait_for_job(lab: LabInfo, host: str, proc: subprocess.Popen[str]) -> None:
    import sqlite3

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the deploy ended before its job started"
        with sqlite3.connect(lab.inventory / ".coophost" / "state.db") as conn:
            rows = conn.execute("SELECT status FROM host_job WHERE host = ? AND run_id = "
                                "(SELECT max(id) FROM run)", (host,)).fetchall()
        if rows and rows[0][0] == "running":
            return
        time.sleep(0.2)
    raise AssertionError(f"{host}'s job never started")


def test_killed_deploy_leaves_no_folders_beyond_the_next_run(lab: LabInfo) -> None:
    proc = subprocess.Popen([*COOPHOST, "-i", str(lab.inventory), "deploy", "--all",
                             "--host", OTHERS[0]], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_job(lab, OTHERS[0], proc)
    deadline = time.monotonic() + 60
    while len(left := _alive_folders(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    record(["deploy", "(killed)"], out, err)
    # An ansible-playbook it started may outlive it: end it too, as a service manager ending
    # the whole run would, so that no later test meets it on the host.
    for pid in _users_of(left):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert len(left) == 2 and all(p.is_dir() for p in left), \
        f"the killed deploy left its job and runner folders: {left}"
    again = lab.cli("deploy")  # the next run, even one with nothing to apply
    assert again.returncode == 0, again.stdout + again.stderr
    assert [p for p in left if p.exists()] == [], "the next run removed the killed run's folders"


def test_wait_queues_behind_a_running_deploy_and_parallel_1_runs_one_host_at_a_time(
        lab: LabInfo) -> None:
    import sqlite3

    hosts = [a for h in OTHERS for a in ("--host", h)]
    first = subprocess.Popen([*COOPHOST, "-i", str(lab.inventory), "deploy", "--json", "--all",
                              "--parallel", "1", *hosts], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    _wait_for_job(lab, OTHERS[0], first)
    busy = lab.cli("deploy")
    assert busy.returncode == 3, busy.stdout + busy.stderr
    waited = lab.cli("deploy", "--wait")
    waited_end = time.time()
    out, err = first.communicate(timeout=900)
    record(["deploy", "--parallel", "1"], out, err)
    assert first.returncode == 0, out + err
    assert waited.returncode == 0, waited.stdout + waited.stderr
    run_id = json.loads(out)["run"]
    with sqlite3.connect(lab.inventory / ".coophost" / "state.db") as conn:
        jobs = conn.execute("SELECT host, started_at, finished_at FROM host_job "
                            "WHERE run_id = ? ORDER BY started_at", (run_id,)).fetchall()
        [(run_end,)] = conn.execute("SELECT finished_at FROM run WHERE id = ?", (run_id,))
    assert [h for h, _, _ in jobs] == list(OTHERS), jobs
    assert jobs[0][2] <= jobs[1][1], \
        f"--parallel 1: the second host started before the first ended: {jobs}"
    assert waited_end >= run_end, "--wait returned before the running deploy ended"


def test_root_cannot_log_in_over_ssh(lab: LabInfo) -> None:
    """Even with an authorized key: the common role's sshd refuses root."""
    host = entry(lab, OTHERS[0])
    assert host.key_file
    public = Path(host.key_file).with_suffix(".pub").read_text()
    name = container(lab, host.name)
    authorized = "/root/.ssh/authorized_keys"
    subprocess.run(["docker", "exec", "-i", name, "sh", "-c",
                    f"mkdir -p -m 700 /root/.ssh && (cp -a {authorized} {authorized}.keep "
                    f"2>/dev/null || true) && cat >> {authorized}"],
                   input=public, text=True, check=True, capture_output=True)
    there = subprocess.run(["docker", "exec", name, "cat", authorized], capture_output=True,
                           text=True, check=True).stdout
    assert public.split()[1] in there, "the key must be in root's authorized_keys first"

    def ssh(user: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-i", str(host.key_file), "-p", str(host.port), "-o", "IdentitiesOnly=yes",
             "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
             "-o", f"UserKnownHostsFile={lab.inventory / 'known_hosts'}",
             "-o", "ControlMaster=no", f"{user}@{host.address}", "id", "-un"],
            capture_output=True, text=True, timeout=60, check=False)
    try:
        as_admin = ssh(host.user)
        as_root = ssh("root")
    finally:
        subprocess.run(["docker", "exec", name, "sh", "-c",
                        f"if [ -e {authorized}.keep ]; then mv {authorized}.keep {authorized}; "
                        f"else rm -f {authorized}; fi"], check=True, capture_output=True)
    assert (as_admin.returncode, as_admin.stdout.strip()) == (0, host.user), as_admin.stderr
    assert as_root.returncode == 255 and "Permission denied" in as_root.stderr, \
        f"root logged in: {as_root.stdout}"

