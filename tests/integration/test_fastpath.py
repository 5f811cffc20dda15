"""The deploy's fast path on real hosts: a new mailbox is live after the units playbook alone.

Each test restores the registry it edited and deploys it again, so later tests in the suite
see the original co-op.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coophost.lab.lab import Lab
from coophost.lab.mailcheck import LabMailbox, acme_roots, lab_state, mailboxes
from coophost.lab.mailprobe import dns_txt, probe
from tests.integration.conftest import LabInfo

pytestmark = pytest.mark.lab

MEMBER = "ada-books"
NEW_BOX = "fastpath"
MARKER = "coophost_it_fastpath"  # a host variable no role reads: still a host-level change


@dataclass
class Deployed:
    """The lab, deployed, its DNS synced; the host of MEMBER's mail."""

    info: LabInfo
    lab: Lab
    host: str

    def deploy(self, *args: str) -> dict[str, Any]:
        """`deploy --json` (exit 0 asserted): its report."""
        proc = self.info.cli("deploy", "--json", *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        report: dict[str, Any] = json.loads(proc.stdout)
        return report

    def boxes(self) -> dict[str, LabMailbox]:
        """Every active member's mailbox, with its password from the vault."""
        return mailboxes(self.info.inventory, lab_state(self.lab))


def edited(path: Path, old: str, new: str) -> str:
    """Replace `old` (present once) by `new` in `path`; return the original text."""
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: {old!r} not found once"
    path.write_text(text.replace(old, new))
    return text


@pytest.fixture(scope="module")
def deployed(lab: LabInfo) -> Deployed:
    report = lab.cli("deploy", "--json")
    assert report.returncode == 0, report.stdout + report.stderr
    lab.cli("lab", "dns", "sync", "--name", lab.name, check=True)
    the_lab = Lab(lab.name, lab.inventory)
    boxes = mailboxes(lab.inventory, lab_state(the_lab))
    host = next(b.host for b in boxes.values() if b.member == MEMBER)
    return Deployed(lab, the_lab, host)


@pytest.fixture
def new_mailbox(deployed: Deployed) -> Iterator[str]:
    """MEMBER gets mailbox NEW_BOX in its file; removed again (and deployed) afterwards."""
    path = deployed.info.inventory / "members" / f"{MEMBER}.yml"
    original = edited(path, "mailboxes: [ada, orders]", f"mailboxes: [ada, orders, {NEW_BOX}]")
    try:
        yield f"{NEW_BOX}@{MEMBER}.test"
    finally:
        path.write_text(original)
        after = deployed.deploy()
        assert {h["status"] for h in after["hosts"].values()} <= {"ok"}


def test_a_new_mailbox_takes_the_fast_path_and_receives_mail(deployed: Deployed,
                                                             new_mailbox: str) -> None:
    started = time.monotonic()
    report = deployed.deploy()
    took = time.monotonic() - started
    assert list(report["hosts"]) == [deployed.host]
    job = report["hosts"][deployed.host]
    assert (job["status"], job["path"]) == ("ok", "fast"), job
    assert job["why"] == "only units changed: mail"
    boxes = deployed.boxes()
    recipient = boxes[new_mailbox]
    sender = next(b for b in boxes.values()
                  if b.host != recipient.host and b.member != MEMBER)
    state = lab_state(deployed.lab)
    result = probe(sender.mailbox, recipient.mailbox, acme_roots(deployed.lab, state),
                   dns_txt("127.0.0.1", state.dns_port))
    assert [(c.name, c.ok) for c in result.checks] == [
        ("submission", True), ("delivery", True), ("dkim", True),
        ("tls between hosts", True)], [c.as_json() for c in result.checks]
    # The full play finds nothing left to do on that host: the fast path did all of it.
    again = deployed.deploy("--all", "--host", deployed.host)
    full = again["hosts"][deployed.host]
    assert (full["status"], full["path"], full["changed"]) == ("ok", "full", 0), (took, full)
    # And the mailbox goes again by the fast path too (a setting of the unit, not the unit).
    path = deployed.info.inventory / "members" / f"{MEMBER}.yml"
    edited(path, f"mailboxes: [ada, orders, {NEW_BOX}]", "mailboxes: [ada, orders]")
    gone = deployed.deploy()
    assert gone["hosts"][deployed.host]["path"] == "fast", gone["hosts"]
    edited(path, "mailboxes: [ada, orders]", f"mailboxes: [ada, orders, {NEW_BOX}]")


def test_a_host_level_change_falls_back_to_the_full_play(deployed: Deployed,
                                                         new_mailbox: str) -> None:
    hosts = deployed.info.inventory / "hosts.yml"
    fqdn = f"      coophost_fqdn: {deployed.host}.{deployed.info.name}.test\n"
    original = edited(hosts, fqdn, fqdn + f"      {MARKER}: 1\n")
    try:
        report = deployed.deploy()
        job = report["hosts"][deployed.host]
        assert (job["status"], job["path"], job["why"]) == ("ok", "full", "host-level change")
    finally:
        hosts.write_text(original)
    back = deployed.deploy()["hosts"][deployed.host]
    assert (back["path"], back["why"]) == ("full", "host-level change")
    forced = deployed.deploy("--full", "--all", "--host", deployed.host)
    assert forced["hosts"][deployed.host]["path"] == "full"


def test_a_git_setting_takes_the_fast_path_and_a_full_play_finds_nothing_left(
        deployed: Deployed) -> None:
    path = deployed.info.inventory / "members" / "cycle-works.yml"
    original = edited(path, "    quota_mb: 2048\n", "    quota_mb: 2000\n")
    try:
        report = deployed.deploy()
        (host, job), = report["hosts"].items()
        assert (job["status"], job["path"], job["why"]) == ("ok", "fast",
                                                            "only units changed: git")
        assert job["changed"] > 0
        again = deployed.deploy("--all", "--host", host)["hosts"][host]
        assert (again["status"], again["path"], again["changed"]) == ("ok", "full", 0)
    finally:
        path.write_text(original)
    back = deployed.deploy()
    assert [j["path"] for j in back["hosts"].values()] == ["fast"]
