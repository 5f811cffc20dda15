"""What each task did: runner events -> changed/failed task records and check-mode diffs, kept in
state.db without a diff or anything of a no_log task but its name, and shown by `runs show`."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest

from coophost.deploy.engine import DeployOptions, _run
from coophost.deploy.executor import LocalExecutor
from coophost.deploy.jobs import HostJob
from coophost.deploy.progress import SilentProgress
from coophost.deploy.records import RunLog
from coophost.deploy.tasks import (
    MASKED_LINE,
    MAX_MESSAGE,
    NO_LOG_DIFF,
    NO_LOG_MESSAGE,
    TaskLog,
    TaskRecord,
    check_report,
    render_diff,
    task_record,
)
from coophost.state import StateDB

CENSORED = {"censored": "the output has been hidden due to the fact that 'no_log: true' was "
                        "specified for this result"}


def event(task: str, res: Mapping[str, object], role: str = "mail", **more: object
          ) -> dict[str, object]:
    return {"host": "h1", "task": task, "role": role, "res": res, "task_uuid": task, **more}


def test_a_changed_task_is_recorded_with_its_role_and_loop_item() -> None:
    data = event("Write the aliases", {"changed": True, "item": {"member": {"slug": "ada"}}})
    assert task_record("runner_item_on_ok", data) == TaskRecord(
        "mail", "Write the aliases", "ada", "changed")
    labelled = event("Write", {"changed": True, "item": {"x": 1}, "_ansible_item_label": "ada"})
    assert task_record("runner_item_on_ok", labelled) == TaskRecord("mail", "Write", "ada",
                                                                    "changed")


def test_a_task_that_changed_nothing_or_was_skipped_is_not_recorded() -> None:
    assert task_record("runner_on_ok", event("Read", {"changed": False})) is None
    assert task_record("runner_on_skipped", event("Skip", {"changed": True})) is None
    assert task_record("runner_on_start", event("Start", {})) is None


def test_a_no_log_task_gives_its_name_only_even_if_its_result_carried_more() -> None:
    # What ansible-runner sends (the result censored; "changed" only in the displayed text) ...
    record = task_record("runner_on_ok", event("Write hashes", CENSORED),
                         stdout="changed: [h1]", with_diff=True)
    assert record == TaskRecord("mail", "Write hashes", "", "changed")
    assert record is not None and record.diff == NO_LOG_DIFF and record.message == ""
    assert task_record("runner_on_ok", event("Write hashes", CENSORED), stdout="ok: [h1]") is None
    # ... and a result merely flagged no_log, holding values: none of them is kept.
    leaky = {"_ansible_no_log": True, "changed": True, "item": "s3cr3t-item", "msg": "s3cr3t",
             "diff": {"before": "", "after": "s3cr3t-diff\n"}}
    for kind in ("runner_on_ok", "runner_item_on_ok", "runner_on_failed"):
        record = task_record(kind, event("Secret task", leaky), stdout="changed: [h1]",
                             with_diff=True)
        assert record is not None, kind
        assert "s3cr3t" not in repr(record), (kind, record)
    failed = task_record("runner_on_failed", event("Secret task", CENSORED))
    assert failed == TaskRecord("mail", "Secret task", "", "failed", NO_LOG_MESSAGE)


def test_a_failure_keeps_its_message_truncated_and_its_failed_items() -> None:
    long = "x" * 2000
    record = task_record("runner_on_failed", event("Fail", {"msg": long}))
    assert record is not None and record.status == "failed"
    assert record.message == "x" * MAX_MESSAGE
    loop = {"results": [{"item": {"slug": "ada"}, "failed": False, "msg": "fine"},
                        {"item": {"slug": "bob"}, "failed": True, "msg": "no space left"},
                        {"failed": True, **CENSORED}]}
    record = task_record("runner_on_failed", event("Per member", loop))
    assert record == TaskRecord("mail", "Per member", "bob", "failed", "no space left")
    ignored = event("Probe", {"msg": "nope"}, ignore_errors=True)
    assert task_record("runner_on_failed", ignored) is None
    gone = task_record("runner_on_unreachable", event("Gather", {"msg": "ssh: timed out"}))
    assert gone == TaskRecord("mail", "Gather", "", "unreachable", "ssh: timed out")


def test_a_loop_is_recorded_per_changed_item_and_not_again_as_a_whole() -> None:
    log = TaskLog()
    items = [{"changed": True, "item": {"slug": "ada"}}, {"changed": False, "item": {"slug": "b"}}]
    for res in items:
        log.add("runner_item_on_ok", event("Loop", res))
    log.add("runner_on_ok", event("Loop", {"changed": True, "results": items}))
    log.add("runner_on_ok", event("Single", {"changed": True}, role="common"))
    # A no_log loop: items censored, each displayed as changed; the whole task shows nothing.
    for _ in range(2):
        log.add("runner_item_on_ok", event("Hidden loop", CENSORED),
                "changed: [h1] => (item=(censored due to no_log))")
    log.add("runner_on_ok", event("Hidden loop", CENSORED), "")
    assert [(r.task, r.item) for r in log.records] == [
        ("Loop", "ada"), ("Single", ""), ("Hidden loop", ""), ("Hidden loop", "")]


def test_a_job_keeps_at_most_its_limit_and_counts_the_rest() -> None:
    log = TaskLog(limit=3)
    for n in range(5):
        log.add("runner_on_ok", event(f"T{n}", {"changed": True}))
    assert [r.task for r in log.records] == ["T0", "T1", "T2"] and log.omitted == 2


def test_render_diff_is_a_unified_diff_with_secret_like_lines_masked() -> None:
    diff = {"before_header": "/etc/postfix/virtual", "after_header": "/etc/postfix/virtual",
            "before": "info@a.test ada@a.test\npassword = hunter2\nsame\n",
            "after": "info@a.test ada@a.test\npassword = hunter3\nsales@a.test orders@a.test\n"
                     "token: Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZkFCQ0RFRg\n"
                     "$argon2id$v=19$m=65536\n"}
    text = render_diff(diff)
    lines = text.splitlines()
    assert lines[:2] == ["--- before: /etc/postfix/virtual", "+++ after: /etc/postfix/virtual"]
    assert "+sales@a.test orders@a.test" in lines
    assert "-same" in lines
    for secret in ("hunter2", "hunter3", "Zm9vYmFy", "argon2id"):
        assert secret not in text
    assert f"-{MASKED_LINE}" in lines and lines.count(f"+{MASKED_LINE}") == 3
    # a random-looking run is masked even without a secret-like word; a path is not
    assert render_diff({"before": "", "after": "Q2hhbmdlTWVQbGVhc2UxMjM0NTY3ODkwYWJj\n"}) \
        .endswith(f"+{MASKED_LINE}")
    assert render_diff({"before": "", "after": "/var/mail/units/1b194ba15879/ada-books/x\n"}) \
        .endswith("+/var/mail/units/1b194ba15879/ada-books/x")


def test_render_diff_shows_data_prepared_text_and_binaries() -> None:
    state = render_diff({"before": {"state": "absent"}, "after": {"state": "directory"}})
    assert '-    "state": "absent"' in state and '+    "state": "directory"' in state
    prepared = render_diff([{"prepared": "+ bob added\n- private_key gone"}])
    assert prepared.splitlines() == ["+ bob added", f"-{MASKED_LINE}"]
    assert render_diff({"dst_binary": 1}) == "(binary file, not shown)"
    assert render_diff(None) == "" and render_diff([]) == ""


def test_check_report_lists_changes_with_diffs_and_failures() -> None:
    records = [TaskRecord("mail", "Aliases", "ada", "changed", diff="+x"),
               TaskRecord("mail", "Hashes", "", "changed", diff=NO_LOG_DIFF),
               TaskRecord("common", "Restart", "", "changed"),
               TaskRecord("mail", "Check", "", "failed", "bad config")]
    assert check_report(records, 2).split("\n\n") == [
        "changed: mail : Aliases (ada)\n+x", f"changed: mail : Hashes\n{NO_LOG_DIFF}",
        "changed: common : Restart\n(changed; the module shows no diff)",
        "failed: mail : Check: bad config", "... and 2 more tasks, not shown"]
    assert check_report([]) == "(nothing would change)"


def fill_runs(root: Path) -> int:
    """A run recorded through RunLog as the engine records one: h1 changed, h2 failed."""
    with StateDB(root) as db:
        log = RunLog(db)
        run_id = log.start_run("deploy", {}, "tester", {"h1": ["ada/mail"], "h2": ["bob/mail"],
                                                        "h3": ["cy/mail"]})
        log.job_finished(run_id, "h1", "ok", {"ok": 9, "changed": 2}, "", None, None,
                         [TaskRecord("mail", "Write the aliases", "ada", "changed",
                                     diff="+never stored"),
                          TaskRecord("mail", "Write hashes", "", "changed")], tasks_omitted=3)
        log.job_finished(run_id, "h2", "failed", {"ok": 4, "failed": 1}, "Check: bad", None,
                         None, [TaskRecord("members", "Create account", "bob", "failed",
                                           "m" * 900)])
        log.job_finished(run_id, "h3", "ok", {"ok": 9}, "", None)
    return run_id


def test_runs_show_lists_each_hosts_changed_and_failed_tasks(coop: Path, cli) -> None:
    run_id = fill_runs(coop)
    code, out, err = cli("-i", str(coop), "runs", "show", str(run_id))
    assert code == 0, err
    tail = out[out.index("h1: tasks that changed or failed"):].splitlines()
    assert tail == [
        "h1: tasks that changed or failed",
        "  changed     mail : Write the aliases (ada)",
        "  changed     mail : Write hashes",
        "  ... and 3 more, not recorded",
        "h2: tasks that changed or failed",
        f"  failed      members : Create account (bob): {'m' * MAX_MESSAGE}"]
    code, out, err = cli("-i", str(coop), "runs", "show", str(run_id), "--json")
    assert code == 0, err
    jobs = {job["host"]: job for job in json.loads(out)["jobs"]}
    assert jobs["h1"]["task_records"] == [
        {"role": "mail", "task": "Write the aliases", "item": "ada", "status": "changed",
         "message": ""},
        {"role": "mail", "task": "Write hashes", "item": "", "status": "changed",
         "message": ""}]
    assert jobs["h1"]["tasks_omitted"] == 3
    assert jobs["h2"]["task_records"][0]["message"] == "m" * MAX_MESSAGE
    assert jobs["h3"]["task_records"] == [] and "never stored" not in out
    with sqlite3.connect(coop / ".coophost" / "state.db") as conn:
        assert "never stored" not in repr(conn.execute("SELECT * FROM job_task").fetchall())


def test_job_finished_keeps_at_most_max_tasks(coop: Path) -> None:
    from coophost.deploy.tasks import MAX_TASKS

    with StateDB(coop) as db:
        log = RunLog(db)
        run_id = log.start_run("deploy", {}, "tester", {"h1": []})
        log.job_finished(run_id, "h1", "ok", {}, "", None, None,
                         [TaskRecord("r", f"T{n}", "", "changed") for n in range(MAX_TASKS + 5)],
                         tasks_omitted=1)
        record = log.run(run_id)
    assert record is not None
    [job] = record.jobs
    assert len(job.task_records) == MAX_TASKS and job.tasks_omitted == 6


PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: Write the settings
      ansible.builtin.copy:
        dest: "{dir}/settings.conf"
        content: "quota = 1500\\npassword = hunter2-not-shown\\n"
    - name: Write the hashes
      ansible.builtin.copy:
        dest: "{dir}/hashes"
        content: "s3cr3t-hash-value\\n"
      no_log: true
    - name: Per member files
      ansible.builtin.copy:
        dest: "{dir}/{{{{ item.member.slug }}}}.conf"
        content: "member {{{{ item.member.slug }}}}\\n"
      loop:
        - {{member: {{slug: ada}}}}
        - {{member: {{slug: bob}}}}
    - name: A failure
      ansible.builtin.fail:
        msg: "the quota is too small"
"""


@pytest.mark.skipif(shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
                    is None, reason="ansible-playbook is not installed beside this Python")
def test_real_events_give_diffs_in_check_mode_and_records_in_state(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "hosts.yml").write_text(
        "all:\n  hosts:\n    h1: {ansible_connection: local, "
        f"ansible_python_interpreter: {sys.executable}}}\n")
    (tmp_path / "site.yml").write_text(PLAYBOOK.format(dir=target))
    jobs = {"h1": HostJob("h1", [("ada", "mail", "a")])}

    def deploy(check: bool) -> tuple[int | None, list[TaskRecord]]:
        result = _run(tmp_path, jobs, DeployOptions(check=check), 1,
                      LocalExecutor(tmp_path, tmp_path / "site.yml", check=check),
                      SilentProgress(), threading.Event(), {})
        outcome = result.outcomes["h1"]
        assert outcome.status == "failed", outcome.output
        return result.run_id, outcome.tasks

    run_id, tasks = deploy(check=True)
    assert run_id is None and not list(target.iterdir())
    by_name = {(t.task, t.item): t for t in tasks}
    settings = by_name[("Write the settings", "")]
    assert "+quota = 1500" in settings.diff and "hunter2" not in settings.diff
    assert f"+{MASKED_LINE}" in settings.diff
    assert by_name[("Write the hashes", "")].diff == NO_LOG_DIFF
    assert "+member bob" in by_name[("Per member files", "bob")].diff
    assert by_name[("A failure", "")] == TaskRecord("", "A failure", "", "failed",
                                                    "the quota is too small")
    assert "s3cr3t" not in repr(tasks)

    run_id, tasks = deploy(check=False)
    assert run_id is not None and all(t.diff == "" for t in tasks)
    with StateDB(tmp_path) as db:
        record = RunLog(db).run(run_id)
    assert record is not None
    assert [(t.status, t.task, t.item) for t in record.jobs[0].task_records] == [
        ("changed", "Write the settings", ""), ("changed", "Write the hashes", ""),
        ("changed", "Per member files", "ada"), ("changed", "Per member files", "bob"),
        ("failed", "A failure", "")]
    with sqlite3.connect(tmp_path / ".coophost" / "state.db") as conn:
        dump = "\n".join(conn.iterdump())
    assert "s3cr3t" not in dump and "hunter2" not in dump and "quota = 1500" not in dump


def test_a_module_naming_its_changed_items_gives_a_record_and_a_diff_per_item() -> None:
    """One task writing several tables (services/mail's postfix_tables) is recorded as a loop
    would be: one record per changed item, each with its own part of the diff list."""
    parts = [{"before": "", "after": "sales@a.test orders@a.test\n",
              "before_header": "/t/aliases", "after_header": "/t/aliases"},
             {"before": "a.test\n", "after": "a.test\nb.test\n",
              "before_header": "/t/domains", "after_header": "/t/domains"}]
    res = {"changed": True, "changed_items": ["aliases", "domains"], "diff": parts}
    log = TaskLog(with_diff=True)
    log.add("runner_on_ok", event("Write the tables", res))
    assert [(r.task, r.item, r.status) for r in log.records] == [
        ("Write the tables", "aliases", "changed"), ("Write the tables", "domains", "changed")]
    assert "+sales@a.test orders@a.test" in log.records[0].diff
    assert "b.test" not in log.records[0].diff and "+b.test" in log.records[1].diff
    assert log.records[1].label() == "mail : Write the tables (domains)"
    # Without --diff (no diff in the result): the same records, no diff.
    plain = TaskLog()
    plain.add("runner_on_ok", event("Write the tables", {"changed": True,
                                                         "changed_items": ["aliases"]}))
    assert [(r.item, r.diff) for r in plain.records] == [("aliases", "")]
    # Unchanged, or censored by no_log: no item is read from the result.
    quiet = TaskLog()
    quiet.add("runner_on_ok", event("Write the tables", {"changed": False,
                                                         "changed_items": []}))
    quiet.add("runner_on_ok", event("Hidden", {**CENSORED, "changed_items": ["x"]}),
              "changed: [h1]")
    assert [(r.task, r.item) for r in quiet.records] == [("Hidden", "")]


def test_a_module_naming_its_failed_items_has_them_as_the_failures_item() -> None:
    res = {"failed": True, "failed_items": ["aliases", "senders"],
           "msg": "postfix table(s) aliases, senders failed to validate"}
    failed = task_record("runner_on_failed", event("Write the tables", res))
    assert failed == TaskRecord("mail", "Write the tables", "aliases, senders", "failed",
                                "postfix table(s) aliases, senders failed to validate")
