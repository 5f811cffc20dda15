"""The Receptor transport through two real receptor nodes on 127.0.0.1 (no lab needed).

A worker node configured as roles/worker configures it (`worker_config`: TLS listener with
client certificates from the co-op CA, signed `coophost-job` work only), running the role's
own forced command (rendered from its template) over this controller's ansible-runner; and
the controller's node as coophost runs it (`Node`). A job goes through `_carry_receptor` into
`ansible-runner process` as a deploy's does. Skipped when receptor is not installed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest

from coophost.deploy.receptor import (
    CONTROLLER_NODE,
    PKI_DIR,
    Node,
    ensure_pki,
    worker_config,
)
from coophost.deploy.remote import RemoteExecutor, StreamEnd, recorded_units
from coophost.layout import STATE_DIR
from coophost.registry.model import HostEntry
from coophost.registry.workers import Worker

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("receptor") is None,
                                reason="receptor is not installed (scripts/setup-host)")

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.pause:
        seconds: "{{ pause_seconds }}"
    - name: Report the host converged  # coophost.deploy.executor.CONVERGED_TASK
      ansible.builtin.debug:
        msg: ran through receptor
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def mesh() -> Iterator[dict[str, Any]]:
    """A worker node w1 on 127.0.0.1 and the inventory folder whose state holds the PKI.

    In a short temp folder: a unix socket's path has at most 107 bytes.
    """
    tmp_path = Path(tempfile.mkdtemp(prefix="rcp-"))
    inventory = tmp_path / "coop"
    inventory.mkdir()
    pki = ensure_pki(inventory / STATE_DIR / PKI_DIR,
                     [(CONTROLLER_NODE, ""), ("w1", "127.0.0.1")])
    tls = tmp_path / "w1-tls"
    tls.mkdir(mode=0o700)
    shutil.copy(pki.ca_cert, tls / "ca.crt")
    shutil.copy(pki.node_cert("w1"), tls / "node.crt")
    shutil.copy(pki.node_key("w1"), tls / "node.key")
    shutil.copy(pki.signing_public, tls / "work-signing.pub")
    jobs = tmp_path / "jobs"
    jobs.mkdir(mode=0o700)
    # The role's forced command, over this controller's Python (its venv has ansible-runner).
    source = ROOT / "roles/worker/templates/coophost-worker-command.py.j2"
    engine = jinja2.Environment(undefined=jinja2.StrictUndefined)
    engine.filters["to_json"] = json.dumps
    text = engine.from_string(source.read_text()).render(
        worker_venv=sys.prefix, worker_jobs_dir=str(jobs), ansible_managed="test")
    command = tmp_path / "command"
    command.write_text(text.replace(f"#!{sys.prefix}/bin/python", f"#!{sys.executable}", 1))
    command.chmod(0o755)
    port = free_port()
    config = worker_config("w1", port=port, bind="127.0.0.1", tls_dir=str(tls),
                           datadir=str(tmp_path / "w1-data"),
                           socket_path=str(tmp_path / "w1.sock"), command=str(command),
                           signing_public=str(tls / "work-signing.pub"))
    (tmp_path / "w1.json").write_text(json.dumps(config))
    log = (tmp_path / "w1.log").open("wb")
    worker = subprocess.Popen(["receptor", "--config", str(tmp_path / "w1.json")],
                              stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    nodes: list[Node] = []
    try:
        yield {"inventory": inventory, "port": port, "jobs": jobs, "nodes": nodes,
               "worker": Worker("w1", HostEntry("w1", "127.0.0.1", 22, "admin", None),
                                ("h1",), 2, str(jobs), "receptor", port),
               "log": tmp_path / "w1.log", "tmp": tmp_path}
    finally:
        for node in nodes:
            node.stop()
        worker.terminate()
        worker.wait(10)
        log.close()
        shutil.rmtree(tmp_path, ignore_errors=True)


def controller(mesh: dict[str, Any]) -> RemoteExecutor:
    executor = RemoteExecutor(mesh["inventory"], {}, read_timeout=20, keepalive=2)
    executor.receptor_workers = [mesh["worker"]]
    return executor


def transmit(tmp: Path, job_id: str, pause: int) -> Any:
    import ansible_runner

    folder = tmp / "send" / job_id
    (folder / "project").mkdir(parents=True)
    (folder / "project" / "play.yml").write_text(PLAYBOOK)
    out = (tmp / f"{job_id}.stream").open("w+b")
    ansible_runner.run(streamer="transmit", _output=out, private_data_dir=str(folder),
                       ident=job_id, playbook="play.yml", extravars={"pause_seconds": pause},
                       envvars={"ANSIBLE_NOCOLOR": "1"})
    out.seek(0)
    return out


def run_through(executor: RemoteExecutor, mesh: dict[str, Any], job_id: str, stream: Any,
                cancel: threading.Event | None = None, hosts: tuple[str, ...] = ()
                ) -> tuple[StreamEnd, str, list[str]]:
    """`_carry_receptor` into `ansible-runner process`: the end, the status, the messages."""
    import ansible_runner

    receiving = mesh["tmp"] / "receive" / job_id
    receiving.mkdir(parents=True)
    messages: list[str] = []

    def on_event(event: dict[str, Any]) -> bool:
        if event.get("event") == "runner_on_ok":
            messages.append(str(event["event_data"]["res"].get("msg", "")))
        return True

    read_end, write_end = os.pipe()
    end = StreamEnd(hosts=hosts)
    pump = threading.Thread(target=executor._carry_receptor, daemon=True,
                            args=(mesh["worker"], f"{mesh['jobs']}/{job_id}", stream,
                                  write_end, cancel or threading.Event(), end))
    pump.start()
    with os.fdopen(read_end, "rb") as incoming:
        ansible_runner.run(streamer="process", _input=incoming, private_data_dir=str(receiving),
                           ident=job_id, quiet=True, event_handler=on_event)
    pump.join(60)
    status_file = receiving / "artifacts" / job_id / "status"
    return end, status_file.read_text().strip() if status_file.is_file() else "", messages


def payloads_left(node: Node) -> list[str]:
    """The payload and output files left in the controller node's unit folders.

    A job's payload holds its SSH key and the vault password: none may rest there.
    """
    base = node.datadir / CONTROLLER_NODE
    return sorted(str(p.relative_to(base)) for p in base.glob("*/std*")) if base.is_dir() else []


def units_gone(node: Node, mesh: dict[str, Any], timeout: float = 20) -> bool:
    """Whether the controller's and the worker's nodes hold no work unit (within timeout)."""
    on_worker = Node(mesh["tmp"] / "w1-state", [])
    on_worker.socket = mesh["tmp"] / "w1.sock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.command("work list") == {} and on_worker.command("work list") == {}:
            return True
        time.sleep(0.5)
    return False


def test_a_job_runs_through_receptor_as_signed_work(mesh: dict[str, Any]) -> None:
    executor = controller(mesh)
    job_id = "0123456789abcdef0123456789abcdef"
    end, status, messages = run_through(executor, mesh, job_id,
                                        transmit(mesh["tmp"], job_id, 0))
    mesh["nodes"].append(executor.receptor_node())
    assert (end.lost, end.exit_status) == ("", 0), (end, mesh["log"].read_text()[-2000:])
    assert status == "successful"
    assert "ran through receptor" in messages
    assert list(mesh["jobs"].iterdir()) == []  # nothing of the job stays on the worker
    assert recorded_units(mesh["inventory"]) == []  # read whole and released
    assert units_gone(executor.receptor_node(), mesh)  # released here and on the worker
    executor.receptor_node().stop()
    assert payloads_left(executor.receptor_node()) == []


def test_unsigned_work_is_refused_by_the_worker(mesh: dict[str, Any]) -> None:
    executor = controller(mesh)
    node = executor.receptor_node()
    mesh["nodes"].append(node)
    node.wait_route("w1")
    with pytest.raises(RuntimeError, match="could not verify signature"):
        node.submit("w1", io.BytesIO(b"x"), "ansible-runner worker --worker-info", signed=False)
    assert list(mesh["jobs"].iterdir()) == []
    assert payloads_left(node) == []  # the refused unit was released here at once


def test_a_controller_without_the_co_op_ca_gets_no_route(mesh: dict[str, Any]) -> None:
    stranger = mesh["tmp"] / "stranger"
    stranger.mkdir()
    node = Node(stranger / STATE_DIR, [("127.0.0.1", mesh["port"])])
    mesh["nodes"].append(node)
    node.start([("w1", "127.0.0.1")])  # its own CA: the worker refuses its certificate
    with pytest.raises(Exception, match="no receptor route"):
        node.wait_route("w1", timeout=8)


def test_a_lost_controller_reattaches_to_the_units_results(mesh: dict[str, Any]) -> None:
    """The run's status comes back, and its host is recorded in state.db as the deploy would."""
    from coophost.deploy.engine import record_reattached
    from coophost.deploy.executor import CONVERGED_TASK
    from coophost.deploy.jobs import HostJob, RunContext
    from coophost.deploy.records import RunLog
    from coophost.deploy.remote import reattach
    from coophost.state import StateDB

    assert CONVERGED_TASK in PLAYBOOK
    inventory = mesh["inventory"]
    job = HostJob("localhost", [("alice", "mail", "u1")], "hosthash", settings={
        ("alice", "mail"): "fp1"}, level="lvl", path="full")
    with StateDB(inventory) as db:
        run_id = RunLog(db).start_run("deploy", {}, "test", {"localhost": ["alice/mail"],
                                                             "elsewhere": []})
        RunLog(db).job_started(run_id, "localhost")
    executor = controller(mesh)
    executor.run = RunContext(run_id, {"localhost": job})
    job_id = "fedcba9876543210fedcba9876543210"
    stream = transmit(mesh["tmp"], job_id, 6)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(
        zip(("end", "status", "messages"),
            run_through(executor, mesh, job_id, stream, hosts=("localhost",)), strict=True)))
    thread.start()
    deadline = time.monotonic() + 30
    while not recorded_units(mesh["inventory"]):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    executor.receptor_node().stop()  # the controller's node goes away mid-run
    thread.join(60)
    assert result["status"] == ""  # the first controller never saw the end
    [record] = recorded_units(mesh["inventory"])
    assert record["job"] == job_id and record["worker"] == "w1"
    receiving = mesh["tmp"] / "reattached"
    found = reattach(mesh["inventory"], [mesh["worker"]], record, receiving)
    mesh["nodes"].append(found.node)
    assert found.status == "successful", found
    assert found.outcomes["localhost"].status == "ok"
    assert recorded_units(mesh["inventory"]) == []
    assert list(mesh["jobs"].iterdir()) == []
    assert units_gone(found.node, mesh)
    found.node.stop()
    assert payloads_left(found.node) == []
    # Recorded in the lost controller's run, as running what the job applied; --resume then
    # reruns only the host whose job never ran.
    assert record["run_id"] == run_id
    done = record_reattached(inventory, record, found.outcomes)
    assert done == {"localhost": f"recorded as ok in run {run_id}"}
    with StateDB(inventory) as db:
        applied = db.applied()
        [run] = RunLog(db).runs(limit=1)
        assert RunLog(db).hosts_to_resume() == ["elsewhere"]
    assert {j.host: j.status for j in run.jobs} == {"localhost": "ok", "elsewhere": "canceled"}
    assert run.status == "abandoned"  # a job of it never ran
    assert applied.units == {("localhost", "alice", "mail"): "u1"}
    assert (applied.hosts, applied.levels) == ({"localhost": "hosthash"}, {"localhost": "lvl"})


def test_a_reattached_host_that_a_later_run_deployed_is_left_to_it(tmp_path: Path) -> None:
    """Recording an old job's outcome over a newer run's would say the host runs old units."""
    from coophost.deploy.engine import record_reattached
    from coophost.deploy.executor import HostOutcome
    from coophost.deploy.jobs import HostJob, RunContext
    from coophost.deploy.records import RunLog
    from coophost.state import StateDB

    with StateDB(tmp_path) as db:
        old = RunLog(db).start_run("deploy", {}, "test", {"h1": [], "h2": []})
        RunLog(db).finish_run(old, "abandoned")
        RunLog(db).start_run("deploy", {}, "test", {"h1": []})
    jobs = {h: HostJob(h, [], f"hash-{h}") for h in ("h1", "h2")}
    record = {"job": "j", "worker": "w1", "unit": "u",
              **RunContext(old, jobs).for_hosts(["h1", "h2"])}
    outcomes = {h: HostOutcome(h, "ok", {"ok": 3, "changed": 1}) for h in ("h1", "h2")}
    done = record_reattached(tmp_path, record, outcomes)
    assert done == {"h1": "not recorded: a later deploy ran this host",
                    "h2": f"recorded as ok in run {old}"}
    with StateDB(tmp_path) as db:
        assert db.applied().hosts == {"h2": "hash-h2"}
    unnamed = {**record, "run_id": None}
    assert set(record_reattached(tmp_path, unnamed, outcomes).values()) == {
        "not recorded: the unit names no deploy run"}


def test_the_version_query_goes_over_receptor_as_signed_work(mesh: dict[str, Any]) -> None:
    """A receptor worker is asked its versions on the mesh: no SSH (its address has none)."""
    from coophost.deploy.remote import controller_versions, worker_info, worker_versions

    node = Node(mesh["inventory"] / STATE_DIR, [("127.0.0.1", mesh["port"])])
    mesh["nodes"].append(node)
    node.start([("w1", "127.0.0.1")])
    no_ssh = mesh["inventory"] / "known_hosts"  # never read: nothing goes over SSH
    found = worker_versions(mesh["worker"], no_ssh, node)
    ours = controller_versions()
    assert {k: found[k] for k in ours} == ours
    info = worker_info(mesh["worker"], no_ssh, node)
    assert info.get("runner_version") == ours["ansible-runner"], info
    assert units_gone(node, mesh)  # each query's unit released, here and on the worker
    assert list(mesh["jobs"].iterdir()) == []
    node.stop()
    assert payloads_left(node) == []


def test_a_new_node_scrubs_what_a_stopped_one_left_of_released_units(
        mesh: dict[str, Any]) -> None:
    """Payloads left by a node stopped before receptor removed them are scrubbed at start."""
    node = Node(mesh["inventory"] / STATE_DIR, [("127.0.0.1", mesh["port"])])
    mesh["nodes"].append(node)
    node.start([("w1", "127.0.0.1")])
    node.stop()
    base = node.datadir / CONTROLLER_NODE
    released, running = base / "released1", base / "running1"
    for folder, extra in ((released, {"RemoteStarted": True, "LocalReleased": True}),
                          (running, {"RemoteStarted": True, "LocalReleased": False})):
        folder.mkdir(parents=True)
        (folder / "status").write_text(json.dumps({"State": 1, "ExtraData": extra}))
        (folder / "stdin").write_text("a job's payload")
        (folder / "stdout").write_text("its output")
    node.start([("w1", "127.0.0.1")])
    assert payloads_left(node) == ["running1/stdin", "running1/stdout"]  # to re-attach
