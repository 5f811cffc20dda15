"""Pure parts of the deploy engine: host selection, outcomes, exit codes, parallelism."""

from __future__ import annotations

from pathlib import Path

import pytest

from coophost.deploy.engine import DeployResult
from coophost.deploy.executor import HostOutcome, outcome_for
from coophost.deploy.jobs import HostJob, Selection, default_parallel, select_hosts
from coophost.deploy.runner import PlaybookResult
from coophost.desired.plan import Change, HostPlan, Plan

PLACED = {"h1": [("ada", "mail"), ("bob", "git")], "h2": [("bob", "mail")], "h3": []}


def plan(*changes: tuple[str, str, str], statuses: dict[str, str] | None = None) -> Plan:
    result = Plan()
    for host, member, service in changes:
        result.changes.append(Change(host, member, service, "change", "new", "old"))
    for host in PLACED:
        status = (statuses or {}).get(host, "unchanged")
        applied = None if status == "new" else ("old" if status == "changed" else "same")
        result.hosts[host] = HostPlan(host, "same", applied)
    return result


@pytest.mark.parametrize(("the_plan", "selection", "resume", "expected"), [
    (plan(), Selection(), [], []),
    (plan(("h1", "ada", "mail")), Selection(), [], ["h1"]),
    (plan(statuses={"h3": "new"}), Selection(), [], ["h3"]),
    (plan(("h1", "ada", "mail"), ("h2", "bob", "mail")), Selection(members=frozenset({"bob"})),
     [], ["h2"]),
    (plan(("h1", "ada", "mail"), ("h2", "bob", "mail")),
     Selection(services=frozenset({"mail"}), hosts=frozenset({"h1"})), [], ["h1"]),
    (plan(), Selection(everything=True), [], ["h1", "h2", "h3"]),
    (plan(), Selection(everything=True, members=frozenset({"bob"})), [], ["h1", "h2"]),
    (plan(("h1", "ada", "mail")), Selection(resume=True), ["h3"], ["h3"]),
    (plan(), Selection(resume=True), ["h2", "gone"], ["h2"]),
    (plan(("h9", "ada", "mail")), Selection(), [], []),  # a host no longer in hosts.yml
])
def test_select_hosts(the_plan: Plan, selection: Selection, resume: list[str],
                      expected: list[str]) -> None:
    assert list(select_hosts(the_plan, PLACED, selection, resume)) == expected


def test_reasons_name_the_units_and_the_host() -> None:
    chosen = select_hosts(plan(("h1", "ada", "mail"), statuses={"h1": "changed"}), PLACED,
                          Selection())
    assert chosen == {"h1": ["host: changed", "ada/mail: change"]}


def result(status: str = "successful", **stats: dict[str, int]) -> PlaybookResult:
    return PlaybookResult(status=status, rc=0 if status == "successful" else 2,
                          stats={"processed": {"h1": 1}, **stats}, stdout="PLAY RECAP\nend")


@pytest.mark.parametrize(("the_result", "expected"), [
    (result(ok={"h1": 5}), "ok"),
    (result("failed", failures={"h1": 1}), "failed"),
    (result("failed", dark={"h1": 1}), "unreachable"),
    (result("canceled"), "canceled"),
    (PlaybookResult(status="failed", rc=4, stats={}, stdout="ERROR! no such role"), "failed"),
])
def test_outcome_for(the_result: PlaybookResult, expected: str) -> None:
    outcome = outcome_for("h1", the_result, tasks=5, failures=[])
    assert outcome.status == expected
    assert outcome.counts["tasks"] == 5
    if expected == "failed" and not the_result.stats:
        assert "no such role" in outcome.summary


@pytest.mark.parametrize(("statuses", "canceled", "code"), [
    ([], False, 0),
    (["ok", "ok"], False, 0),
    (["ok", "failed"], False, 1),
    (["failed", "unreachable"], False, 4),
    (["ok", "canceled"], False, 130),
    (["ok"], True, 130),
])
def test_exit_codes(statuses: list[str], canceled: bool, code: int) -> None:
    outcomes = {f"h{i}": HostOutcome(f"h{i}", s) for i, s in enumerate(statuses)}
    assert DeployResult(None, outcomes=outcomes, canceled=canceled).exit_code == code


def test_by_member_reports_each_unit_with_its_host() -> None:
    jobs = {"h1": HostJob("h1", [("ada", "mail", "x"), ("bob", "git", "y")]),
            "h2": HostJob("h2", [("bob", "mail", "z")])}
    done = DeployResult(1, jobs, {"h1": HostOutcome("h1", "ok"),
                                  "h2": HostOutcome("h2", "unreachable")})
    assert done.by_member() == {"ada": {"mail": "ok (h1)"},
                                "bob": {"git": "ok (h1)", "mail": "unreachable (h2)"}}


def test_every_available_service_has_a_role_and_no_coming_one_is_deployed() -> None:
    """Honest catalogue: what members may enable is what a role deploys; a coming service has
    no role yet, or one being built that no playbook runs."""
    from coophost.desired.units import role_version
    from coophost.registry.catalogue import load_catalogue

    playbooks = Path(__file__).resolve().parents[2] / "playbooks"
    for name, service in load_catalogue().services.items():
        has_role = role_version(service.role) != "absent"
        if service.available:
            assert has_role, f"{name}: available, but no role found"
        else:
            assert not (playbooks / "stages" / f"{name}.yml").exists(), name
            assert name not in (playbooks / "site.yml").read_text(), name



@pytest.mark.parametrize(("jobs", "cores", "expected"), [(1, 2, 1), (3, 2, 3), (10, 2, 4),
                                                          (10, 8, 10), (0, 2, 1)])
def test_default_parallel(jobs: int, cores: int, expected: int) -> None:
    assert default_parallel(jobs, cores) == expected
