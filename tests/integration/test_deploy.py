"""The deploy engine on three real lab hosts: only what changed, failures kept per host,
resume, cancel, the lock, check mode, and secrets kept out of every output and record."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.integration.conftest import COOPHOST, RUNNER_COPIES, LabInfo, record
from tests.integration.secretscan import RECORDER, decrypt_all, files_under, leaks

pytestmark = pytest.mark.lab


def cli(lab: LabInfo, *args: str) -> subprocess.CompletedProcess[str]:
    return lab.cli(*args)  # recorded for the secret search (conftest)


def deploy_json(lab: LabInfo, *args: str) -> tuple[int, dict[str, object]]:
    proc = cli(lab, "deploy", "--json", *args)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def plan_json(lab: LabInfo) -> dict[str, object]:
    data: dict[str, object] = json.loads(cli(lab, "plan", "--json").stdout)
    return data


def where(lab: LabInfo) -> dict[str, str]:
    """member/service -> host, from the member files (placements recorded by deploy)."""
    result = {}
    for path in sorted((lab.inventory / "members").glob("*.yml")):
        placement = YAML(typ="safe").load(path.read_text()).get("placement") or {}
        result.update({f"{path.stem}/{service}": host for service, host in placement.items()})
    return result


def set_quota(lab: LabInfo, unit: str, value: int) -> None:
    member, service = unit.split("/")
    proc = cli(lab, "service", "enable", member, service, "--set", f"quota_mb={value}")
    assert proc.returncode == 0, proc.stderr


def change_every_host(lab: LabInfo, value: int) -> None:
    """Change one unit on each host, so that a plain deploy has work on all three."""
    seen: set[str] = set()
    for unit, host in sorted(where(lab).items()):
        if host not in seen and unit.endswith("/mail"):
            seen.add(host)
            set_quota(lab, unit, value)
    assert seen == {"h1", "h2", "h3"}, where(lab)


def state(lab: LabInfo, query: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(lab.inventory / ".coophost" / "state.db") as conn:
        return conn.execute(query, args).fetchall()


def wait_for_job(lab: LabInfo, host: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = state(lab, "SELECT status FROM host_job WHERE host = ? "
                          "AND run_id = (SELECT max(id) FROM run)", host)
        if rows and rows[0][0] == "running":
            return
        time.sleep(0.2)
    raise AssertionError(f"{host}'s job never started")


def background_deploy(lab: LabInfo, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*COOPHOST, "-i", str(lab.inventory), "deploy", "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def collect(proc: subprocess.Popen[str], timeout: float = 600) -> tuple[int, dict[str, object]]:
    out, err = proc.communicate(timeout=timeout)
    record(proc.args, out, err)  # type: ignore[arg-type]
    return proc.returncode, json.loads(out)


def test_first_deploy_applies_every_host_and_records_placements(lab: LabInfo) -> None:
    assert cli(lab, "plan").returncode == 1
    code, result = deploy_json(lab)
    assert code == 0, result
    hosts = result["hosts"]
    assert isinstance(hosts, dict) and sorted(hosts) == ["b1", "h1", "h2", "h3"]
    assert all(h["status"] == "ok" for h in hosts.values())
    assert cli(lab, "plan").returncode == 0
    placed = where(lab)
    # The sample co-op's four members have mail, cycle-works Git hosting (on h1) and
    # bread-coop a Nextcloud (on h1; h1 and h2 are the lab's hosts of group nextcloud).
    assert len(placed) == 6 and set(placed.values()) == {"h1", "h2", "h3"}, placed
    assert placed["cycle-works/git"] == "h1", placed
    assert placed["bread-coop/nextcloud"] == "h1", placed
    runs = json.loads(cli(lab, "runs", "list", "--json").stdout)
    assert runs[0]["status"] == "ok" and runs[0]["hosts"] == {
        "b1": "ok", "h1": "ok", "h2": "ok", "h3": "ok"}


def test_redeploy_with_nothing_changed_contacts_no_host(lab: LabInfo) -> None:
    containers = [f"coophost-{lab.name}-h{i}" for i in (1, 2, 3)]
    runs_before = state(lab, "SELECT count(*) FROM run")
    subprocess.run(["docker", "pause", *containers], check=True, capture_output=True)
    try:  # a paused host would hang any connection: the deploy must not make one
        started = time.monotonic()
        proc = cli(lab, "deploy")
        took = time.monotonic() - started
    finally:
        subprocess.run(["docker", "unpause", *containers], check=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to deploy" in proc.stdout
    assert state(lab, "SELECT count(*) FROM run") == runs_before
    assert took < 10


def test_change_to_one_member_runs_only_that_members_host(lab: LabInfo) -> None:
    host = where(lab)["ada-books/mail"]
    member_file = lab.inventory / "members" / "ada-books.yml"
    before = YAML(typ="safe").load(member_file.read_text())["services"]["mail"]["quota_mb"]
    set_quota(lab, "ada-books/mail", 1500)
    plan = plan_json(lab)
    assert [c["host"] for c in plan["changes"]] == [host]  # type: ignore[index, union-attr]
    # What changed, against what the first deploy recorded when it applied the unit.
    [change] = plan["changes"]  # type: ignore[misc]
    assert change["settings"] == [{"key": "settings.quota_mb", "old": str(before),
                                   "new": "1500"}], change
    code, result = deploy_json(lab)
    assert code == 0, result
    assert list(result["hosts"]) == [host]  # type: ignore[arg-type]
    assert cli(lab, "plan").returncode == 0
    set_quota(lab, "ada-books/mail", 1600)  # this deploy recorded 1500
    shown = cli(lab, "plan")
    assert shown.returncode == 1 and "settings.quota_mb: 1500 -> 1600" in shown.stdout, shown
    set_quota(lab, "ada-books/mail", 1500)
    assert cli(lab, "plan").returncode == 0


POSTFIX_TABLES = ("Write the members' domains, mailboxes, aliases, sender logins, suspended "
                  "and relayed domains")
DOVECOT_USERS = "Write the mailboxes' logins, password hashes and quotas"  # a no_log task
SECRET_SIGNS = ("$argon2", "CRYPT}", "BEGIN", "PRIVATE")


def set_mail(lab: LabInfo, member: str, quota: int, aliases: dict[str, list[str]]) -> None:
    proc = cli(lab, "service", "enable", member, "mail", "--set", f"quota_mb={quota}",
               "--set", f"aliases={json.dumps(aliases)}")
    assert proc.returncode == 0, proc.stderr


def run_tasks(lab: LabInfo, run_id: object) -> dict[str, list[dict[str, str]]]:
    """`runs show RUN --json`: each host job's recorded tasks."""
    shown = cli(lab, "runs", "show", str(run_id), "--json")
    assert shown.returncode == 0, shown.stderr
    return {job["host"]: job["task_records"] for job in json.loads(shown.stdout)["jobs"]}


def test_check_diff_shows_each_tasks_diff_and_runs_show_names_changed_and_failed_tasks(
        lab: LabInfo) -> None:
    """A new alias and quota for one member: `deploy --check --diff` shows the alias line it
    would add, the no_log quota file as hidden, no secret; `runs show` then lists the changed
    tasks on that member's host only; with postmap broken there, the failed task and its
    message. The member's settings and postmap are put back, and deployed, at the end."""
    host = where(lab)["ada-books/mail"]
    container = f"coophost-{lab.name}-{host}"
    mail = YAML(typ="safe").load(
        (lab.inventory / "members" / "ada-books.yml").read_text())["services"]["mail"]
    quota, aliases = int(mail["quota_mb"]), dict(mail["aliases"])
    set_mail(lab, "ada-books", quota + 77, {**aliases, "sales": ["orders"]})
    try:
        runs_before = state(lab, "SELECT count(*), max(id) FROM run")
        proc = cli(lab, "deploy", "--check", "--diff")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        text = proc.stdout
        assert f"{host}: what --check would change" in text
        assert "+sales@ada-books.test orders@ada-books.test" in text, text
        assert f"changed: mail : {DOVECOT_USERS}\n(diff hidden: no_log)" in text, text
        assert not [sign for sign in SECRET_SIGNS if sign in text], text
        assert "ada@ada-books.test:" not in text  # a line of the hashes file
        code, result = deploy_json(lab, "--check", "--diff")
        assert code == 0, result
        [(checked, outcome)] = result["hosts"].items()  # type: ignore[union-attr]
        tables = {t["item"]: t for t in outcome["tasks"] if t["task"] == POSTFIX_TABLES}
        assert checked == host and "aliases" in tables, outcome  # (senders may change too)
        assert "+sales@ada-books.test orders@ada-books.test" in tables["aliases"]["diff"]
        assert state(lab, "SELECT count(*), max(id) FROM run") == runs_before

        code, result = deploy_json(lab)
        assert code == 0, result
        tasks = run_tasks(lab, result["run"])
        assert list(tasks) == [host], tasks  # only the member's host ran, and has records
        changed = {(t["task"], t["item"]) for t in tasks[host] if t["status"] == "changed"}
        assert {(POSTFIX_TABLES, "aliases"), (DOVECOT_USERS, "")} <= changed, tasks
        assert all(t["message"] == "" for t in tasks[host])
        shown = cli(lab, "runs", "show", str(result["run"]))
        assert f"{host}: tasks that changed or failed" in shown.stdout
        assert f"changed     mail : {POSTFIX_TABLES} (aliases)" in shown.stdout, shown.stdout

        # A failure: postmap (the tables' validator) broken on the host, the alias removed.
        broken = on_container(container, "sh", "-c",
                              "mv /usr/sbin/postmap /usr/sbin/postmap.it-real && printf "
                              "'#!/bin/sh\\necho postmap broken by the test >&2\\nexit 1\\n' "
                              "> /usr/sbin/postmap && chmod 755 /usr/sbin/postmap")
        assert broken.returncode == 0, broken.stderr
        try:
            set_mail(lab, "ada-books", quota, aliases)
            code, result = deploy_json(lab)
            assert code == 1, result
            [failed] = [t for t in run_tasks(lab, result["run"])[host] if t["status"] == "failed"]
            assert (failed["role"], failed["task"]) == ("mail", POSTFIX_TABLES), failed
            assert "aliases" in failed["item"].split(", "), failed  # (and senders, maybe)
            assert "validate" in failed["message"], failed
            shown = cli(lab, "runs", "show", str(result["run"]))
            assert (f"failed      mail : {POSTFIX_TABLES} ({failed['item']}): "
                    f"{failed['message']}") in shown.stdout, shown.stdout
        finally:
            on_container(container, "mv", "/usr/sbin/postmap.it-real", "/usr/sbin/postmap")
    finally:
        set_mail(lab, "ada-books", quota, aliases)
        code, result = deploy_json(lab)
        assert code == 0, result
        assert cli(lab, "plan").returncode == 0


def on_container(container: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "exec", container, *argv], capture_output=True, text=True,
                          timeout=120, check=False)


def test_check_diff_shows_changes_without_touching_hosts_or_state(lab: LabInfo) -> None:
    proc = cli(lab, "member", "add", "eve-garden", "--name", "Eve's Garden", "--contact",
               "eve@eve-garden.test", "--domain", "eve-garden.test")
    assert proc.returncode == 0, proc.stderr
    assert cli(lab, "service", "enable", "eve-garden", "mail").returncode == 0
    host = where(lab)["eve-garden/mail"]
    applied_before = state(lab, "SELECT host, hash, run_id FROM applied_host ORDER BY host")
    runs_before = state(lab, "SELECT count(*) FROM run")
    proc = cli(lab, "deploy", "--check", "--diff")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "+u m-eve-garden" in proc.stdout  # the account the real deploy will add
    assert state(lab, "SELECT host, hash, run_id FROM applied_host ORDER BY host") == \
        applied_before
    assert state(lab, "SELECT count(*) FROM run") == runs_before
    on_host = cli(lab, "lab", "ssh", "--name", lab.name, host, "--", "getent", "passwd",
                  "m-eve-garden")
    assert on_host.returncode == 2, "check mode created the account"
    code, result = deploy_json(lab)
    assert code == 0 and list(result["hosts"]) == [host]  # type: ignore[arg-type]
    assert cli(lab, "lab", "ssh", "--name", lab.name, host, "--", "getent", "passwd",
               "m-eve-garden").returncode == 0


def test_stopped_host_is_unreachable_others_applied_then_resume_completes_it(
        lab: LabInfo) -> None:
    change_every_host(lab, 1100)
    victim = f"coophost-{lab.name}-h3"
    proc = background_deploy(lab)
    wait_for_job(lab, "h3")
    subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
    code, result = collect(proc)
    run_id = result["run"]
    hosts = result["hosts"]
    assert code == 4, result
    assert hosts["h3"]["status"] == "unreachable"  # type: ignore[index]
    assert hosts["h1"]["status"] == hosts["h2"]["status"] == "ok"  # type: ignore[index]
    applied = dict(state(lab, "SELECT host, run_id FROM applied_host"))
    assert applied["h1"] == applied["h2"] == run_id and applied["h3"] != run_id
    pending = plan_json(lab)
    assert {c["host"] for c in pending["changes"]} == {"h3"}  # type: ignore[union-attr, index]

    subprocess.run(["docker", "start", victim], check=True, capture_output=True)
    deadline = time.monotonic() + 90
    while cli(lab, "host", "check", "h3").returncode != 0:
        assert time.monotonic() < deadline, "h3 did not come back"
        time.sleep(1)
    code, result = deploy_json(lab, "--resume")
    assert code == 0, result
    assert list(result["hosts"]) == ["h3"]  # type: ignore[arg-type]
    assert cli(lab, "plan").returncode == 0


def wait_for_any_job(lab: LabInfo, timeout: float = 120) -> str:
    """The host whose job in the newest run is running, once one is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = state(lab, "SELECT host FROM host_job WHERE status = 'running' "
                          "AND run_id = (SELECT max(id) FROM run)")
        if rows:
            return str(rows[0][0])
        time.sleep(0.1)
    raise AssertionError("no job started")


def test_sigint_cancels_records_and_the_next_deploy_completes(lab: LabInfo) -> None:
    change_every_host(lab, 1200)
    # One host at a time, so that the interrupt lands while hosts are still waiting to start
    # however fast the running job is; the running one is canceled too when it is slow enough.
    proc = background_deploy(lab, "--parallel", "1")
    wait_for_any_job(lab)
    proc.send_signal(signal.SIGINT)
    code, result = collect(proc)
    assert code == 130, result
    run_id = result["run"]
    [(status,)] = state(lab, "SELECT status FROM run WHERE id = ?", run_id)
    assert status == "canceled"
    jobs = dict(state(lab, "SELECT host, status FROM host_job WHERE run_id = ?", run_id))
    assert set(jobs.values()) <= {"canceled", "ok"} and "canceled" in jobs.values()
    for host, job_status in jobs.items():  # applied only where the job succeeded
        recorded = state(lab, "SELECT run_id FROM applied_host WHERE host = ?", host)[0][0]
        assert (recorded == run_id) == (job_status == "ok")
    assert state(lab, "SELECT count(*) FROM run WHERE status = 'running'") == [(0,)]
    code, result = deploy_json(lab)
    assert code == 0, result
    assert cli(lab, "plan").returncode == 0


def test_a_second_deploy_at_once_exits_3(lab: LabInfo) -> None:
    # one host's whole play holds the lock long enough; every host's cost CI time for nothing
    first = background_deploy(lab, "--all", "--host", "h1")
    wait_for_job(lab, "h1")
    second = cli(lab, "deploy")
    assert second.returncode == 3, second.stdout + second.stderr
    assert "lock" in second.stderr
    code, _ = collect(first)
    assert code == 0


def test_secrets_never_appear_in_output_state_or_artifacts(lab: LabInfo) -> None:
    """Every piece of every secret, searched in the deploys' outputs, state and runner copies.

    (The session's last check, conftest's `no_secret_leaks`, searches every test's output the
    same way; this one fails at the deploy tests, where a leak would start.)
    """
    shown = cli(lab, "secrets", "show", "bread-coop", "--json")
    assert shown.returncode == 0, shown.stderr
    values = [v for v in _strings(json.loads(shown.stdout)) if len(v) >= 16]
    assert values, "the member has generated secrets"
    assert any("\n" in v for v in values), "the DKIM key (a multi-line secret) is among them"
    # (A secret can sit in several files: the DKIM key is in secrets/ and in host_vars/.)
    decrypted = set(decrypt_all(lab.inventory, _vault_password(lab)))
    assert set(values) <= decrypted, "the scanner decrypts what secrets show shows"
    places = [*RECORDER.outputs, *files_under(lab.inventory / ".coophost",
                                              lab.inventory / "host_vars", RUNNER_COPIES)]
    assert any(label.startswith("coophost") and "deploy" in label
               for label, _ in RECORDER.outputs), "the deploys' outputs were recorded"
    assert list(RUNNER_COPIES.iterdir()), "the deploys' runner folders were kept for the search"
    leftovers = list(Path(tempfile.gettempdir()).glob("coophost-run-*")) + \
        list(Path(tempfile.gettempdir()).glob("coophost-job-*"))
    assert leftovers == [], "runner folders must be removed after each job"
    found = leaks(values, places)
    assert not found, "\n".join(found[:20])


def _vault_password(lab: LabInfo) -> bytes:
    return (lab.inventory / "vault-password").read_bytes().strip()


def _strings(data: object) -> list[str]:
    if isinstance(data, dict):
        return [s for v in data.values() for s in _strings(v)]
    if isinstance(data, list):
        return [s for v in data for s in _strings(v)]
    return [data] if isinstance(data, str) else []
