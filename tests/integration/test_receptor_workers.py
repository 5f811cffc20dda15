"""Deploys through execution nodes over Receptor, on lab workers that run Debian's receptor.

Brings two receptor workers (w1, w2) into the shared lab (`lab up --workers 2
--worker-transport receptor`: systemd containers in the controller's network, sshd and
receptor's TLS listener on 127.0.0.1 only), installs them (`workers setup`: roles/worker with
receptor from trixie, the co-op's CA and work signing), and removes them at the end
(`lab up --workers 0`), so the lab's hosts.yml is what it was. The hosts are left as deployed.
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

from tests.integration.conftest import COOPHOST, LabInfo
from tests.integration.test_workers import (
    TIMESYNC,
    deploy_json,
    deploy_through_workers_matches_a_local_deploy,
    in_container,
    job_folders,
    lab_workers,
)

pytestmark = pytest.mark.lab

SOCKET = "/run/receptor/receptor.sock"  # roles/worker's control socket


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


@pytest.fixture(scope="module")
def workers(lab: LabInfo) -> Iterator[list[str]]:
    """Two receptor workers in the lab, installed; removed again at the end."""
    yield from lab_workers(lab, "receptor")


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
