"""Workers in hosts.yml: validation, routing, version checks, the forced command's allowlist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import jinja2
import pytest

from coophost.deploy.receptor import job_params as receptor_job_params
from coophost.deploy.remote import (
    RoutingExecutor,
    WorkerSlots,
    _scrub_artifacts,
    version_mismatches,
)
from coophost.errors import ValidationError
from coophost.registry.catalogue import load_catalogue
from coophost.registry.parse import parse_hosts, parse_workers
from coophost.registry.workers import least_loaded, serving

ROOT = Path(__file__).resolve().parents[2]
CAP = {"ram_mb": 1024, "disk_gb": 10}


def inventory(worker_vars: dict[str, Any], extra_groups: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    return {"all": {"hosts": {h: {"coophost_capacity": CAP} for h in ("h1", "h2", "h3")},
                    "children": {"mail": {"hosts": {"h1": None, "h2": None}},
                                 **(extra_groups or {}),
                                 "coophost_workers": {"hosts": {"w1": worker_vars}}}}}


def test_workers_are_read_and_left_out_of_the_service_hosts() -> None:
    data = inventory({"coophost_worker_serves": ["mail", "h3"], "coophost_worker_capacity": 3})
    catalogue = load_catalogue()
    assert sorted(parse_hosts(data, "hosts.yml", catalogue)) == ["h1", "h2", "h3"]
    [worker] = parse_workers(data, "hosts.yml", catalogue)
    assert (worker.name, worker.serves, worker.capacity) == ("w1", ("mail", "h3"), 3)
    assert worker.job_connection.user == "coophost-worker"


@pytest.mark.parametrize(("why", "worker_vars", "field", "words"), [
    ("serves nothing declared", {}, "hosts.w1.coophost_worker_serves", "must say"),
    ("serves an empty list", {"coophost_worker_serves": []},
     "hosts.w1.coophost_worker_serves", "serves nothing"),
    ("serves an unknown host", {"coophost_worker_serves": ["h9"]},
     "hosts.w1.coophost_worker_serves[0]", "no such host"),
    ("serves a worker", {"coophost_worker_serves": ["w1"]},
     "hosts.w1.coophost_worker_serves[0]", "no such host"),
    ("capacity zero", {"coophost_worker_serves": ["h1"], "coophost_worker_capacity": 0},
     "hosts.w1.coophost_worker_capacity", "at least 1"),
    ("capacity a string", {"coophost_worker_serves": ["h1"], "coophost_worker_capacity": "4"},
     "hosts.w1.coophost_worker_capacity", "integer"),
    ("jobs dir with a traversal", {"coophost_worker_serves": ["h1"],
                                   "coophost_worker_jobs_dir": "/var/../etc"},
     "hosts.w1.coophost_worker_jobs_dir", "plain names"),
    ("jobs dir with a shell word", {"coophost_worker_serves": ["h1"],
                                    "coophost_worker_jobs_dir": "/tmp/x;id"},
     "hosts.w1.coophost_worker_jobs_dir", "plain names"),
])
def test_bad_worker_declarations_exit_2_naming_file_field_value(
        why: str, worker_vars: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_hosts(inventory(worker_vars), "hosts.yml", load_catalogue())
    problems = caught.value.errors
    assert any(p.file == "hosts.yml" and p.field == field and words in p.problem
               for p in problems), (why, [str(p) for p in problems])
    assert caught.value.exit_code == 2


def test_a_worker_in_a_service_group_is_refused() -> None:
    data = inventory({"coophost_worker_serves": ["h1"]})
    data["all"]["children"]["mail"]["hosts"]["w1"] = None
    with pytest.raises(ValidationError, match="no service host"):
        parse_hosts(data, "hosts.yml", load_catalogue())


def test_routing_by_host_or_group_and_least_loaded() -> None:
    data = inventory({"coophost_worker_serves": ["mail"], "coophost_worker_capacity": 2})
    data["all"]["children"]["coophost_workers"]["hosts"]["w2"] = {
        "coophost_worker_serves": ["h1", "h3"], "coophost_worker_capacity": 4}
    catalogue = load_catalogue()
    hosts = parse_hosts(data, "hosts.yml", catalogue)
    workers = parse_workers(data, "hosts.yml", catalogue)
    names = {h: [w.name for w in serving(h, hosts[h].groups, workers)] for h in hosts}
    assert names == {"h1": ["w1", "w2"], "h2": ["w1"], "h3": ["w2"]}
    w1, w2 = workers
    assert least_loaded([w1, w2], {}) is w1  # a tie goes to the first by name
    assert least_loaded([w1, w2], {"w1": 1}) is w2  # 1/2 against 0/4
    assert least_loaded([w1, w2], {"w1": 1, "w2": 2}) is w1  # 1/2 against 2/4: a tie
    assert least_loaded([w1, w2], {"w1": 2, "w2": 4}) is None  # both full


def test_slots_wait_for_a_free_worker_and_give_up_on_cancel() -> None:
    data = inventory({"coophost_worker_serves": ["h1"], "coophost_worker_capacity": 1})
    [worker] = parse_workers(data, "hosts.yml", load_catalogue())
    slots = WorkerSlots()
    cancel = threading.Event()
    assert slots.acquire([worker], cancel) is worker
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(slots.acquire([worker], cancel)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # the only slot is taken
    slots.release(worker)
    waiter.join(5)
    assert got == [worker]
    cancel.set()
    assert slots.acquire([worker], cancel) is None


class Recording:
    """An executor that records which hosts it ran (the local one, in routing tests)."""

    def __init__(self) -> None:
        self.ran: list[list[str]] = []

    def run_hosts(self, hosts: list[str], sink: Any, cancel: threading.Event,
                  done: Any = None) -> dict[str, Any]:
        from coophost.deploy.executor import HostOutcome

        self.ran.append(hosts)
        return {h: HostOutcome(h, "ok") for h in hosts}


def test_hosts_no_worker_serves_run_locally_and_a_mismatched_worker_gets_no_job() -> None:
    from coophost.registry.hosts import connections

    data = inventory({"coophost_worker_serves": ["h1"]})
    catalogue = load_catalogue()
    entries = connections(parse_hosts(data, "hosts.yml", catalogue))
    workers = parse_workers(data, "hosts.yml", catalogue)
    local = Recording()
    routing = RoutingExecutor(local, None, workers, entries)  # type: ignore[arg-type]
    routing._checked["w1"] = "worker w1 refused: versions differ: ansible-core 2.18.1"
    outcomes = routing.run_hosts(["h1", "h2"], lambda *a: None, threading.Event())
    assert local.ran == [["h2"]]
    assert outcomes["h2"].status == "ok"
    assert outcomes["h1"].status == "unreachable"
    assert "ansible-core 2.18.1" in outcomes["h1"].summary


def test_a_receptor_worker_whose_node_cannot_start_gets_no_job_and_the_rest_run() -> None:
    """No receptor on the controller: that worker's hosts are unreachable, not a crash."""
    from coophost.errors import EnvironmentProblem
    from coophost.registry.hosts import connections

    data = inventory({"coophost_worker_serves": ["h1"],
                      "coophost_worker_transport": "receptor"})
    catalogue = load_catalogue()
    entries = connections(parse_hosts(data, "hosts.yml", catalogue))
    workers = parse_workers(data, "hosts.yml", catalogue)

    class NoNode:
        known_hosts = Path("known_hosts")

        def receptor_node(self) -> Any:
            raise EnvironmentProblem("receptor is not installed on the controller")

    local = Recording()
    routing = RoutingExecutor(local, NoNode(), workers, entries)  # type: ignore[arg-type]
    outcomes = routing.run_hosts(["h1", "h2"], lambda *a: None, threading.Event())
    assert local.ran == [["h2"]] and outcomes["h2"].status == "ok"
    assert outcomes["h1"].status == "unreachable"
    assert "receptor is not installed" in outcomes["h1"].summary


def test_version_mismatches_name_each_package() -> None:
    ours = {"ansible-core": "2.19.14", "ansible-runner": "2.4.3", "mitogen": "0.3.54"}
    assert version_mismatches(ours, dict(ours, python="3.11.2")) == []
    wrong = version_mismatches(ours, dict(ours, **{"ansible-core": "2.18.0", "mitogen": ""}))
    assert wrong == ["ansible-core 2.18.0 (controller 2.19.14)",
                     "mitogen missing (controller 0.3.54)"]


def test_scrubbed_artifacts_keep_no_environment_and_only_the_stats(tmp_path: Path) -> None:
    (tmp_path / "command").write_text(json.dumps({"command": ["ansible-playbook"],
                                                  "env": {"SECRET": "x"}}))
    events = tmp_path / "job_events"
    events.mkdir()
    (events / "1-a.json").write_text(json.dumps({"event": "runner_on_ok", "stdout": "s"}))
    (events / "2-b.json").write_text(json.dumps({"event": "playbook_on_stats"}))
    _scrub_artifacts(str(tmp_path))
    assert "env" not in json.loads((tmp_path / "command").read_text())
    assert [p.name for p in events.iterdir()] == ["2-b.json"]


@pytest.fixture
def forced_command(tmp_path: Path) -> Path:
    """The worker role's forced command, rendered against a fake venv under tmp_path."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    runner = venv / "bin" / "ansible-runner"
    runner.write_text(f"#!{sys.executable}\nimport sys\nprint('RAN', sys.argv[1:])\n")
    runner.chmod(0o755)
    source = ROOT / "roles/worker/templates/coophost-worker-command.py.j2"
    engine = jinja2.Environment(autoescape=False)
    engine.filters["to_json"] = json.dumps
    text = engine.from_string(source.read_text()).render(
        worker_venv=str(venv), worker_jobs_dir=str(tmp_path / "jobs"),
        ansible_managed="test")
    text = text.replace(f"#!{venv}/bin/python", f"#!{sys.executable}", 1)
    script = tmp_path / "command"
    script.write_text(text)
    script.chmod(0o755)
    (tmp_path / "jobs").mkdir()
    return script


def run_forced(script: Path, original: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "SSH_ORIGINAL_COMMAND": original,
           "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([str(script)], capture_output=True, text=True, env=env, check=False,
                          timeout=60)


@pytest.mark.parametrize("original", [
    "", "sh", "ansible-runner worker", "ansible-runner worker --delete",
    "ansible-runner worker --delete --private-data-dir /etc",
    "ansible-runner worker --delete --private-data-dir JOBS/../../etc",
    "ansible-runner worker --delete --private-data-dir JOBS/abc;id",
    "ansible-runner worker --delete --private-data-dir JOBS/0123456789abcdef extra",
    "ansible-runner worker --delete --keepalive-seconds 0 --private-data-dir JOBS/0123456789abcdef",
    "ansible-runner worker --delete --keepalive-seconds $(id) --private-data-dir "
    "JOBS/0123456789abcdef",
    "ansible-runner run /tmp -p x.yml", "ansible-runner worker --worker-info; id",
    "coophost-worker versions --all",
])
def test_the_forced_command_refuses_everything_off_its_allowlist(
        forced_command: Path, original: str) -> None:
    jobs = str(forced_command.parent / "jobs")
    proc = run_forced(forced_command, original.replace("JOBS", jobs))
    assert proc.returncode == 126, (original, proc.stdout, proc.stderr)
    assert "refused" in proc.stderr
    assert "RAN" not in proc.stdout


def test_the_forced_command_runs_a_job_and_removes_its_folder(forced_command: Path) -> None:
    job = forced_command.parent / "jobs" / "0123456789abcdef"
    job.mkdir()
    (job / "leftover").write_text("x")
    proc = run_forced(forced_command, "ansible-runner worker --delete --keepalive-seconds 5 "
                                      f"--private-data-dir {job}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("RAN ['worker', '--delete', '--keepalive-seconds', '5', "
                                   f"'--private-data-dir', '{job}']")
    assert not job.exists()


def test_the_forced_command_reports_the_versions(forced_command: Path) -> None:
    proc = run_forced(forced_command, "coophost-worker versions")
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert set(found) == {"ansible-core", "ansible-runner", "mitogen", "python"}


def test_a_group_is_spread_as_one_job_per_worker() -> None:
    from coophost.deploy.remote import spread

    assert spread(["b1", "h1", "h2", "h3"], 2) == [["b1", "h2"], ["h1", "h3"]]
    assert spread(["h1"], 3) == [["h1"]]
    assert spread(["h1", "h2"], 0) == [["h1", "h2"]]  # the controller's: one job


def test_the_forced_command_takes_receptors_arguments_with_the_same_allowlist(
        forced_command: Path) -> None:
    jobs = forced_command.parent / "jobs"
    job = jobs / "0123456789abcdef"
    job.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join(sys.path)}
    words = receptor_job_params(str(jobs), job.name, 5).split()
    ran = subprocess.run([str(forced_command), *words], capture_output=True, text=True,
                         env=env, check=False, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert "RAN ['worker', '--delete'" in ran.stdout and not job.exists()
    refused = subprocess.run([str(forced_command), "ansible-runner", "worker", "--delete",
                              "--private-data-dir", "/etc"], capture_output=True, text=True,
                             env=env, check=False, timeout=60)
    assert refused.returncode == 126 and "refused" in refused.stderr
    assert run_forced(forced_command, "sh").returncode == 126
