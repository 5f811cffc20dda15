"""A host's deploy failure names the member and unit behind it, when the failure says whose."""

from __future__ import annotations

import shutil
import sys
import threading
from pathlib import Path

import pytest

from coophost.deploy.engine import DeployOptions, _run
from coophost.deploy.executor import LocalExecutor, item_label
from coophost.deploy.jobs import HostJob, blame
from coophost.deploy.progress import SilentProgress

UNITS = [("bob", "mail", "x"), ("bobby", "mail", "y"), ("ada-books", "mail", "z"),
         ("books", "mail", "w")]


@pytest.mark.parametrize(("causes", "expected"), [
    ([("members", "'m-bob' is not a valid user or group name")], [("bob", ["bob/mail"])]),
    ([("mail", "cannot write /var/vmail/ada-books/new")], [("ada-books", ["ada-books/mail"])]),
    ([("", "Unable to start service: timeout")], []),
    ([("", "failed for bobby")], [("bobby", ["bobby/mail"])]),
    ([("nextcloud", "m-bob: no such file")], [("bob", ["bob/mail"])]),  # not a unit here
])
def test_blame_names_whole_words_only(causes, expected) -> None:
    assert blame(causes, UNITS) == expected


def test_a_failure_in_a_service_role_points_at_that_unit_only() -> None:
    units = [("bob", "mail", "x"), ("bob", "git", "y")]
    assert blame([("mail", "bob")], units) == [("bob", ["bob/mail"])]
    assert blame([("members", "m-bob")], units) == [("bob", ["bob/git", "bob/mail"])]


def test_item_labels() -> None:
    assert item_label({"item": "m-bob"}) == "m-bob"
    assert item_label({"item": {"member": {"slug": "bob"}, "settings": {}}}) == "bob"
    assert item_label({"results": [{"item": {"slug": "ada"}, "failed": True},
                                   {"item": {"slug": "bob"}, "failed": False}]}) == "ada"
    assert item_label({"msg": "no item"}) == ""


PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: Per member work
      ansible.builtin.fail:
        msg: "the work failed"
      when: item.member.slug == "bob"
      loop:
        - {member: {slug: ada-books}}
        - {member: {slug: bob}}
"""


@pytest.mark.skipif(shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
                    is None, reason="ansible-playbook is not installed beside this Python")
def test_a_real_failed_loop_item_is_traced_to_its_member(tmp_path: Path) -> None:
    (tmp_path / "hosts.yml").write_text(
        "all:\n  hosts:\n    h1: {ansible_connection: local, "
        f"ansible_python_interpreter: {sys.executable}}}\n")
    (tmp_path / "site.yml").write_text(PLAYBOOK)
    jobs = {"h1": HostJob("h1", [("ada-books", "mail", "a"), ("bob", "mail", "b")])}
    result = _run(tmp_path, jobs, DeployOptions(check=True), 1,
                  LocalExecutor(tmp_path, tmp_path / "site.yml"), SilentProgress(),
                  threading.Event(), {})
    outcome = result.outcomes["h1"]
    assert outcome.status == "failed", outcome.output
    assert "Per member work (item bob): the work failed" in outcome.summary
    assert outcome.summary.endswith("caused by member bob (bob/mail)")
    assert "ada-books" not in outcome.summary
