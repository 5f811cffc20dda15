"""Deploys through execution nodes (workers): over Receptor, then over pinned SSH.

Brings two receptor workers (w1, w2) into the shared lab (`lab up --workers 2
--worker-transport receptor`: systemd containers in the controller's network, sshd and
receptor's TLS listener on 127.0.0.1 only), installs them once (`workers setup`: roles/worker
with receptor from trixie, the co-op's CA and work signing) and removes them at the end
(`lab up --workers 0`), so the lab's hosts.yml is what it was. The Receptor tests come first;
then hosts.yml sends the same workers their jobs over SSH (ansible-runner's streaming through
the worker's forced command) for the SSH tests. The hosts are left as deployed.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import COOPHOST, RUNNER_COPIES, LabInfo

pytestmark = pytest.mark.lab

TIMESYNC = "/etc/systemd/timesyncd.conf.d/coophost.conf"  # roles/common writes it
JOBS_DIR = "/var/lib/coophost-worker/jobs"
SOCKET = "/run/receptor/receptor.sock"  # roles/worker's control socket
TRANSPORT = "coophost_worker_transport"


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


def receptor_ports(lab: LabInfo) -> dict[str, int]:
    from coophost.registry.loader import load_registry

    base = load_registry(lab.inventory).base
    assert base is not None
    return {w.name: w.receptor_port for w in base.workers if w.transport == "receptor"}


def work_units(lab: LabInfo, worker: str) -> dict[str, object]:
    """The work units the worker's receptor node holds."""
    out = in_container(lab, worker, "receptorctl", "--socket", SOCKET, "work", "list").stdout
    return json.loads(out or "{}")


def recorded_units(lab: LabInfo) -> list[dict[str, object]]:
    from coophost.deploy.remote import recorded_units as recorded

    return recorded(lab.inventory)


def wait_until_clean(lab: LabInfo, workers: list[str], timeout: float = 600) -> None:
    """Until no job folder and no work unit is left on any worker."""
    deadline = time.monotonic() + timeout
    while any(job_folders(lab, w) or work_units(lab, w) for w in workers):
        assert time.monotonic() < deadline, {w: (job_folders(lab, w), work_units(lab, w))
                                             for w in workers}
        time.sleep(3)


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


@pytest.fixture(scope="module")
def workers(lab: LabInfo) -> Iterator[list[str]]:
    """Two receptor workers in the lab, installed; removed again at the end."""
    yield from lab_workers(lab, "receptor")


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
        assert_applied_with_events(host, outcome)
    for host in hosts:
        assert in_container(lab, host, "test", "-s", TIMESYNC, check=False).returncode == 0
    assert_ran_on_workers(before)
    assert_local_deploy_changes_nothing(lab, hosts)


def assert_applied_with_events(host: str, outcome: dict[str, object]) -> None:
    """The host's play ran whole and its events came back to the controller: task counts,
    and the changed task (roles/common's TIMESYNC, removed before) named."""
    assert outcome["status"] == "ok", (host, outcome)
    assert int(outcome["ok"]) > 20  # type: ignore[call-overload]
    assert int(outcome["changed"]) >= 1, (host, outcome)  # type: ignore[call-overload]
    assert any(TIMESYNC in str(t) or "time" in str(t).lower()
               for t in outcome["tasks"]), outcome["tasks"]  # type: ignore[attr-defined]


def assert_ran_on_workers(before: set[Path]) -> None:
    """Each job since `before` ran on a worker: the artifacts that came back say where."""
    ran_in = set()
    for folder in set(RUNNER_COPIES.iterdir()) - before:
        for command in folder.glob("artifacts/*/command"):
            data = json.loads(command.read_text())
            assert "env" not in data  # the worker's echo of the environment is dropped
            ran_in.add(str(data.get("cwd", "")).split("/jobs/")[0])
    assert ran_in == {"/var/lib/coophost-worker"}, ran_in


def assert_local_deploy_changes_nothing(lab: LabInfo, hosts: list[str]) -> None:
    """A local deploy of every host has nothing left to change."""
    code, local = deploy_json(lab, "--all", "--local")
    assert code == 0, local
    assert {h: o["changed"] for h, o in local.items()} == dict.fromkeys(hosts, 0)


def test_receptor_listens_on_the_given_address_with_tls_only(lab: LabInfo,
                                                            workers: list[str]) -> None:
    ports = receptor_ports(lab)
    assert sorted(ports) == workers
    listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True,
                               check=True).stdout
    for worker, port in ports.items():
        assert in_container(lab, worker, "systemctl", "is-active", "receptor").stdout.strip() \
            == "active"
        # the workers share the controller's network: their listeners are on 127.0.0.1 only
        bound = [line.split()[3] for line in listening.splitlines()
                 if line.split()[3].endswith(f":{port}")]
        assert bound == [f"127.0.0.1:{port}"], (worker, bound)
    assert not any(line.split()[3].endswith(":7323") for line in listening.splitlines())
    assert lab.cli("workers", "check").returncode == 0


def test_deploy_through_receptor_workers_matches_a_local_deploy(lab: LabInfo,
                                                                workers: list[str]) -> None:
    deploy_through_workers_matches_a_local_deploy(lab)
    # the jobs went as receptor work: a worker's journal names the controller's node
    journals = {w: in_container(lab, w, "journalctl", "-u", "receptor", "--no-pager").stdout
                for w in workers}
    assert any("coophost-controller" in text for text in journals.values())
    # read whole and released: no unit recorded here, none left on a worker, no job folder
    assert recorded_units(lab) == []
    wait_until_clean(lab, workers, timeout=60)


def test_a_lab_worker_refuses_unsigned_work(lab: LabInfo, workers: list[str]) -> None:
    from coophost.deploy.receptor import Node
    from coophost.layout import STATE_DIR

    ports = receptor_ports(lab)
    node = Node(lab.inventory / STATE_DIR, [("127.0.0.1", ports["w1"])])
    node.start([("w1", "127.0.0.1")])
    try:
        node.wait_route("w1")
        with pytest.raises(RuntimeError, match="could not verify signature"):
            node.submit("w1", io.BytesIO(b"x"), "ansible-runner worker --worker-info",
                        signed=False)
    finally:
        node.stop()
    assert job_folders(lab, "w1") == []


def test_receptor_workers_need_no_ssh_for_checks_and_deploys(lab: LabInfo,
                                                            workers: list[str]) -> None:
    """With sshd stopped on both workers, `workers check` and a deploy go over the mesh."""
    for worker in workers:
        in_container(lab, worker, "systemctl", "stop", "ssh")
    try:
        for worker in workers:  # no SSH answers on the worker's port any more
            assert in_container(lab, worker, "systemctl", "is-active", "ssh",
                                check=False).stdout.strip() != "active"
        proc = lab.cli("workers", "check", "--json")
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        rows = json.loads(proc.stdout)["workers"]
        assert [(r["name"], r["transport"], r["ok"]) for r in rows] == [
            ("w1", "receptor", True), ("w2", "receptor", True)], rows
        in_container(lab, "h1", "rm", "-f", TIMESYNC)
        code, result = deploy_json(lab, "--all", "--host", "h1")
        assert code == 0 and result["h1"]["status"] == "ok", result
        assert int(result["h1"]["changed"]) >= 1, result  # type: ignore[call-overload]
        assert in_container(lab, "h1", "test", "-s", TIMESYNC, check=False).returncode == 0
    finally:
        for worker in workers:
            in_container(lab, worker, "systemctl", "start", "ssh")
    wait_until_clean(lab, workers, timeout=60)


def test_a_killed_controller_reattaches_records_the_host_and_resume_has_nothing_left(
        lab: LabInfo, workers: list[str], tmp_path: Path) -> None:
    in_container(lab, "h1", "rm", "-f", TIMESYNC)
    log = (tmp_path / "deploy.err").open("w")
    proc = subprocess.Popen(
        [*COOPHOST, "-i", str(lab.inventory), "deploy", "--all", "--host", "h1", "--json"],
        stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        deadline = time.monotonic() + 300
        while not recorded_units(lab):  # submitted: the unit is recorded
            assert time.monotonic() < deadline and proc.poll() is None, \
                (tmp_path / "deploy.err").read_text()
            time.sleep(0.5)
        time.sleep(5)  # well into the play
        assert proc.poll() is None, "the play ended before the controller could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup at all: its receptor node lives on
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    [record] = recorded_units(lab)
    assert record["hosts"] == ["h1"] and isinstance(record["run_id"], int)
    # the play goes on on the worker; reattach reads its whole output and records h1
    proc2 = lab.cli("workers", "reattach", "--json", timeout=900)
    assert proc2.returncode == 0, (proc2.stdout, proc2.stderr)
    [row] = json.loads(proc2.stdout)
    assert row["status"] == "successful", row
    assert row["hosts"]["h1"]["state"] == f"recorded as ok in run {record['run_id']}", row
    assert row["hosts"]["h1"]["changed"] >= 1, row
    assert in_container(lab, "h1", "test", "-s", TIMESYNC, check=False).returncode == 0
    assert recorded_units(lab) == []
    last = json.loads(lab.cli("runs", "list", "--json", check=True).stdout)[0]
    assert (last["id"], last["status"], last["hosts"]) == (record["run_id"], "ok", {"h1": "ok"})
    # nothing left to resume, and nothing changed since
    code, resumed = deploy_json(lab, "--resume")
    assert code == 0 and resumed == {}, resumed
    code, again = deploy_json(lab, "--all", "--host", "h1")
    assert code == 0 and again["h1"]["changed"] == 0, again
    wait_until_clean(lab, workers)


# -- the same workers over SSH ------------------------------------------------------------------

@pytest.fixture(scope="module")
def ssh_workers(lab: LabInfo, workers: list[str]) -> list[str]:
    """The workers, with hosts.yml now sending them their jobs over SSH (after the Receptor
    tests: the module's tests run in file order). `lab up --workers 0` at the end writes
    hosts.yml anew."""
    hosts_yml = lab.inventory / "hosts.yml"
    text = hosts_yml.read_text()
    assert text.count(f"{TRANSPORT}: receptor") == len(workers), text
    hosts_yml.write_text(text.replace(f"{TRANSPORT}: receptor", f"{TRANSPORT}: ssh"))
    return workers


def test_workers_are_listed_and_checked(lab: LabInfo, ssh_workers: list[str]) -> None:
    listed = json.loads(lab.cli("workers", "list", "--json", check=True).stdout)
    assert [w["name"] for w in listed] == ssh_workers
    assert all(w["capacity"] == 2 and set(service_hosts(lab)) <= set(w["serves"])
               for w in listed)
    report = json.loads(lab.cli("workers", "check", "--json", check=True).stdout)
    assert [(w["name"], w["transport"]) for w in report["workers"] if w["ok"]] == \
        [(w, "ssh") for w in ssh_workers]
    for row in report["workers"]:
        assert {k: row["versions"][k] for k in report["controller"]} == report["controller"]
        assert row["worker_info"]["runner_version"] == report["controller"]["ansible-runner"]


def test_a_cut_transport_leaves_the_host_unknown_and_resume_completes_it(
        lab: LabInfo, ssh_workers: list[str]) -> None:
    """Every host through the SSH workers, one job cut: the others applied with their events
    back, the cut one unknown until `--resume`; then a local deploy changes nothing."""
    hosts = service_hosts(lab)
    for host in hosts:  # something roles/common puts back, on every host
        in_container(lab, host, "rm", "-f", TIMESYNC)
    before = set(RUNNER_COPIES.iterdir())
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
    for host in set(hosts) - set(unknown):
        assert_applied_with_events(host, result[host])
    # never recorded as applied; --resume reruns exactly that host, through a worker
    code, resumed = deploy_json(lab, "--resume")
    assert code == 0, resumed
    assert {h: o["status"] for h, o in resumed.items()} == dict.fromkeys(unknown, "ok")
    for host in hosts:
        assert in_container(lab, host, "test", "-s", TIMESYNC, check=False).returncode == 0
    assert_ran_on_workers(before)
    # the orphaned play ends on its own; then nothing of any job stays on the workers
    wait_until_empty(lab, ssh_workers)
    assert_nothing_left(lab, ssh_workers)
    assert_local_deploy_changes_nothing(lab, hosts)


def test_a_silent_worker_is_unknown_after_the_read_timeout(lab: LabInfo,
                                                           ssh_workers: list[str]) -> None:
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
    wait_until_empty(lab, ssh_workers)


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
                                                       ssh_workers: list[str]) -> None:
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
