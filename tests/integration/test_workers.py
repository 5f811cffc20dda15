"""Deploys through execution nodes (workers): ansible-runner's streaming over pinned SSH.

Brings two workers (w1, w2) into the shared lab (`lab up --workers 2`), installs them
(`workers setup`), and removes them at the end (`lab up --workers 0`), so the lab's hosts.yml
is what it was. The hosts are left as deployed.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import COOPHOST, RUNNER_COPIES, LabInfo

pytestmark = pytest.mark.lab

TIMESYNC = "/etc/systemd/timesyncd.conf.d/coophost.conf"  # roles/common writes it
JOBS_DIR = "/var/lib/coophost-worker/jobs"


def container(lab: LabInfo, name: str) -> str:
    return f"coophost-{lab.name}-{name}"


def in_container(lab: LabInfo, name: str, *argv: str, check: bool = True
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "exec", container(lab, name), *argv], capture_output=True,
                          text=True, check=check, timeout=120)


def deploy_json(lab: LabInfo, *args: str) -> tuple[int, dict[str, dict[str, object]]]:
    proc = lab.cli("deploy", "--json", *args)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)["hosts"]


def service_hosts(lab: LabInfo) -> list[str]:
    from coophost.registry.loader import load_hosts

    return sorted(load_hosts(lab.inventory))


def job_folders(lab: LabInfo, worker: str) -> list[str]:
    return in_container(lab, worker, "ls", "-A", JOBS_DIR).stdout.split()


def wait_until_empty(lab: LabInfo, workers: list[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while any(job_folders(lab, w) for w in workers):
        assert time.monotonic() < deadline, {w: job_folders(lab, w) for w in workers}
        time.sleep(3)


@pytest.fixture(scope="module")
def workers(lab: LabInfo) -> Iterator[list[str]]:
    """Two workers in the lab, installed; removed again at the end."""
    yield from lab_workers(lab, "ssh")


def lab_workers(lab: LabInfo, transport: str) -> Iterator[list[str]]:
    """Bring w1 and w2 (of `transport`) into the lab, install them; remove them at the end."""
    lab.cli("lab", "up", "--name", lab.name, "--workers", "2", "--worker-transport", transport,
            check=True)
    try:
        lab.cli("workers", "setup", check=True, timeout=1800)
        yield ["w1", "w2"]
    finally:
        lab.cli("lab", "up", "--name", lab.name, "--workers", "0", check=True)
    hosts_yml = (lab.inventory / "hosts.yml").read_text()
    assert "coophost_workers" not in hosts_yml


def test_workers_are_listed_and_checked(lab: LabInfo, workers: list[str]) -> None:
    listed = json.loads(lab.cli("workers", "list", "--json", check=True).stdout)
    assert [w["name"] for w in listed] == workers
    assert all(w["capacity"] == 2 and set(service_hosts(lab)) <= set(w["serves"])
               for w in listed)
    report = json.loads(lab.cli("workers", "check", "--json", check=True).stdout)
    assert [w["name"] for w in report["workers"] if w["ok"]] == workers
    for row in report["workers"]:
        assert {k: row["versions"][k] for k in report["controller"]} == report["controller"]
        assert row["worker_info"]["runner_version"] == report["controller"]["ansible-runner"]


def test_deploy_through_workers_matches_a_local_deploy(lab: LabInfo,
                                                       workers: list[str]) -> None:
    deploy_through_workers_matches_a_local_deploy(lab)
    wait_until_empty(lab, workers, timeout=60)


def deploy_through_workers_matches_a_local_deploy(lab: LabInfo) -> None:
    """`deploy --all` through the workers changes a file on every host, with its events back,
    ran in the workers' job folders, and a local deploy afterwards changes nothing."""
    hosts = service_hosts(lab)
    for host in hosts:  # something roles/common puts back, on every host
        in_container(lab, host, "rm", "-f", TIMESYNC)
    before = set(RUNNER_COPIES.iterdir())
    code, result = deploy_json(lab, "--all")
    assert code == 0, result
    assert sorted(result) == hosts
    for host, outcome in result.items():
        assert outcome["status"] == "ok", (host, outcome)
        # the events came back to the controller: task counts, and the changed task named
        assert int(outcome["ok"]) > 20  # type: ignore[call-overload]
        assert int(outcome["changed"]) >= 1, (host, outcome)  # type: ignore[call-overload]
        assert any(TIMESYNC in str(t) or "time" in str(t).lower()
                   for t in outcome["tasks"]), outcome["tasks"]  # type: ignore[attr-defined]
    for host in hosts:
        assert in_container(lab, host, "test", "-s", TIMESYNC, check=False).returncode == 0
    # each job ran on a worker: the artifacts that came back say where ansible ran
    ran_in = set()
    for folder in set(RUNNER_COPIES.iterdir()) - before:
        for command in folder.glob("artifacts/*/command"):
            data = json.loads(command.read_text())
            assert "env" not in data  # the worker's echo of the environment is dropped
            ran_in.add(str(data.get("cwd", "")).split("/jobs/")[0])
    assert ran_in == {"/var/lib/coophost-worker"}, ran_in
    # a local deploy of every host then has nothing left to change
    code, local = deploy_json(lab, "--all", "--local")
    assert code == 0, local
    assert {h: o["changed"] for h, o in local.items()} == dict.fromkeys(hosts, 0)


def test_a_cut_transport_leaves_the_host_unknown_and_resume_completes_it(
        lab: LabInfo, workers: list[str]) -> None:
    hosts = service_hosts(lab)
    proc = subprocess.Popen(
        [*COOPHOST, "-i", str(lab.inventory), "deploy", "--all", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # wait for a play to run on w1, then kill the sshd process of one of its sessions
        deadline = time.monotonic() + 300
        killed = ""
        while not killed:
            assert time.monotonic() < deadline, "no job started on w1"
            assert proc.poll() is None, proc.communicate()
            if job_folders(lab, "w1"):
                time.sleep(8)  # well into the play
                killed = in_container(lab, "w1", "python3", "-c", KILL_ONE_SESSION).stdout
            time.sleep(1)
        out, err = proc.communicate(timeout=1200)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 4, (out, err)  # DESIGN.md: 4 host unreachable
    result = json.loads(out)["hosts"]
    # the deploy's hosts went as one job to each worker: the job cut on w1 is unknown (a host
    # of it that had already converged would stay ok), the job on w2 is applied
    unknown = [h for h, o in result.items() if o["status"] == "unknown"]
    assert 1 <= len(unknown) < len(hosts), result
    assert all("transport was lost" in str(result[h]["summary"]) for h in unknown), result
    assert {h: o["status"] for h, o in result.items() if h not in unknown} == \
        dict.fromkeys(sorted(set(hosts) - set(unknown)), "ok")
    # never recorded as applied; --resume reruns exactly that host, through a worker
    code, resumed = deploy_json(lab, "--resume")
    assert code == 0, resumed
    assert {h: o["status"] for h, o in resumed.items()} == dict.fromkeys(unknown, "ok")
    # the orphaned play ends on its own; then nothing of any job stays on the workers
    wait_until_empty(lab, workers)
    assert_nothing_left(lab, workers)


def test_a_silent_worker_is_unknown_after_the_read_timeout(lab: LabInfo,
                                                           workers: list[str]) -> None:
    """A worker that stops answering without closing the connection (frozen, or a firewall
    dropping its packets) is noticed by the read timeout, not waited for forever."""
    proc = subprocess.Popen(
        [*COOPHOST, "-i", str(lab.inventory), "deploy", "--all", "--host", "h1", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    paused = False
    try:
        deadline = time.monotonic() + 300
        while not job_folders(lab, "w1"):  # h1 goes to w1: the least loaded, first by name
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(1)
        time.sleep(5)
        subprocess.run(["docker", "pause", container(lab, "w1")], check=True, timeout=60)
        paused = True
        out, err = proc.communicate(timeout=300)
    finally:
        if paused:
            subprocess.run(["docker", "unpause", container(lab, "w1")], check=True, timeout=60)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 4, (out, err)
    outcome = json.loads(out)["hosts"]["h1"]
    assert outcome["status"] == "unknown", outcome
    assert "no data from the worker" in str(outcome["summary"])
    code, resumed = deploy_json(lab, "--resume")
    assert code == 0 and {h: o["status"] for h, o in resumed.items()} == {"h1": "ok"}, resumed
    wait_until_empty(lab, workers)


def assert_nothing_left(lab: LabInfo, workers: list[str]) -> None:
    """No job folder, no carried key, no vault password anywhere on the workers."""
    password_file = lab.inventory / "vault-password"
    password = password_file.read_text().strip() if password_file.is_file() else ""
    key = (lab.inventory / ".coophost" / "lab" / "id_ed25519").read_text()
    key_body = "".join(key.strip().splitlines()[1:-1])[:60]
    for worker in workers:
        assert job_folders(lab, worker) == []
        for needle in (password, key_body):
            if not needle:
                continue
            found = in_container(lab, worker, "grep", "-rlsF", "--", needle, "/var/lib",
                                 "/tmp", "/home", "/root", "/opt/coophost-worker", "/run",
                                 check=False)
            assert found.stdout.strip() == "", (worker, found.stdout)


def test_a_worker_with_another_ansible_core_is_refused(lab: LabInfo,
                                                       workers: list[str]) -> None:
    metadata = in_container(lab, "w2", "sh", "-c", "ls /opt/coophost-worker/venv/lib/python3*/"
                            "site-packages/ansible_core-*.dist-info/METADATA").stdout.strip()
    original = in_container(lab, "w2", "cat", metadata).stdout
    version = next(line.split(":", 1)[1].strip() for line in original.splitlines()
                   if line.startswith("Version:"))
    in_container(lab, "w2", "sed", "-i", f"s/^Version: {version}$/Version: 2.18.99/", metadata)
    try:
        proc = lab.cli("workers", "check")
        assert proc.returncode == 1, (proc.stdout, proc.stderr)
        assert "w2" in proc.stderr and "ansible-core 2.18.99" in proc.stderr
        assert f"controller {version}" in proc.stderr
        assert "w1: ok" in " ".join(proc.stdout.split())
    finally:
        in_container(lab, "w2", "sed", "-i", f"s/^Version: 2.18.99$/Version: {version}/",
                     metadata)
    assert lab.cli("workers", "check").returncode == 0


# Run inside a worker: SIGKILL the sshd process of one coophost-worker session (the one
# carrying a job), as a network cut would end it.
KILL_ONE_SESSION = """
import os, signal
for pid in sorted(os.listdir('/proc'), key=lambda p: (not p.isdigit(), p)):
    if not pid.isdigit():
        continue
    try:
        cmd = open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ').decode()
    except OSError:
        continue
    if cmd.startswith('sshd: coophost-worker@'):
        os.kill(int(pid), signal.SIGKILL)
        print(pid, cmd)
        break
"""
