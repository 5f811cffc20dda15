"""One job for many hosts records each host the moment it converges, not when the job ends."""

from __future__ import annotations

import shutil
import sys
import threading
from pathlib import Path

import pytest

from coophost.deploy.engine import DeployOptions, _run
from coophost.deploy.executor import CONVERGED_TASK, HostOutcome, LocalExecutor
from coophost.deploy.jobs import HostJob
from coophost.deploy.progress import SilentProgress
from coophost.deploy.records import RunLog
from coophost.state import StateDB

NEEDS_ANSIBLE = pytest.mark.skipif(
    shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) is None,
    reason="ansible-playbook is not installed beside this Python")

# `slow` waits until the test has seen `quick` reported (it would time out, and fail, if
# hosts were reported only when the job ends); `broken` fails before the last task.
PLAYBOOK = """\
- name: Site
  hosts: all
  gather_facts: false
  tasks:
    - name: Work
      ansible.builtin.command: "true"
      changed_when: true
    - name: Wait for the quick host's record
      ansible.builtin.wait_for:
        path: "{go}"
        timeout: 60
      when: inventory_hostname == 'slow'
    - name: Break
      ansible.builtin.fail:
        msg: broken on purpose
      when: inventory_hostname == 'broken'
    - name: {converged}
      ansible.builtin.debug:
        msg: converged
"""


@NEEDS_ANSIBLE
def test_one_job_reports_each_host_when_it_converges(tmp_path: Path) -> None:
    local = f"{{ansible_connection: local, ansible_python_interpreter: {sys.executable}}}"
    (tmp_path / "hosts.yml").write_text(
        "all:\n  hosts:\n" + "".join(f"    {h}: {local}\n" for h in ("quick", "slow", "broken")))
    go = tmp_path / "quick-was-recorded"
    (tmp_path / "site.yml").write_text(PLAYBOOK.format(converged=CONVERGED_TASK, go=go))
    jobs = {h: HostJob(h, [("ada", "mail", h)], host_hash=f"hash-{h}")
            for h in ("quick", "slow", "broken")}
    order: list[str] = []
    recorded: dict[str, bool] = {}

    class Watch(SilentProgress):
        def finished(self, outcome: HostOutcome) -> None:
            order.append(outcome.host)
            if outcome.host == "quick":  # the slow host is waiting for this, mid-job
                go.touch()
            if outcome.host == "slow":  # converged after quick was reported, job not over
                with StateDB(tmp_path) as db:
                    recorded["quick"] = "quick" in db.applied().hosts

    result = _run(tmp_path, jobs, DeployOptions(mode="batch"), 3,
                  LocalExecutor(tmp_path, tmp_path / "site.yml", strategy="free", forks=3),
                  Watch(), threading.Event(), {})
    statuses = {h: o.status for h, o in result.outcomes.items()}
    assert statuses == {"quick": "ok", "slow": "ok", "broken": "failed"}
    assert order == ["quick", "slow", "broken"]  # a failed host: when the job ends
    assert recorded == {"quick": True}  # applied in state.db while the job went on
    assert result.outcomes["quick"].counts["changed"] == 1
    assert "broken on purpose" in result.outcomes["broken"].summary
    with StateDB(tmp_path) as db:
        applied = db.applied().hosts
        run = RunLog(db).run(result.run_id or 0)
    assert set(applied) == {"quick", "slow"}
    assert run is not None and {j.host: j.status for j in run.jobs} == statuses


@pytest.mark.parametrize(("mode", "parallel", "jobs", "expected"), [
    ("batch", None, 5, "batch"),          # the default: one job, every host under way
    ("batch", 5, 5, "batch"),
    ("batch", 8, 5, "batch"),
    ("batch", 1, 2, "per-host"),          # at most one host under way: one job each, in turn
    ("per-host", None, 5, "per-host"),
])
def test_an_explicit_parallel_below_the_hosts_runs_a_rolling_window(
        mode: str, parallel: int | None, jobs: int, expected: str) -> None:
    from coophost.deploy.engine import effective_mode

    assert effective_mode(DeployOptions(mode=mode, parallel=parallel), jobs) == expected
