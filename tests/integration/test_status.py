"""Day-2 health on real lab hosts: `status` finds a stopped service and a certificate near its
end, `notify run` mails the co-op's contacts once per change of state (and once more when it
recovers), members see their part in the member shell, and a member hears of its request.

The co-op's contact is pointed at a member's mailbox for the module (coop.yml is restored
after): the sample co-op's own address has no mailbox in the lab.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from coophost.fsutil import atomic_write
from coophost.lab.lab import Lab
from coophost.lab.mailcheck import LabMailbox, acme_roots, lab_state, mailboxes
from coophost.lab.mailprobe import IMAPAt, tls_context
from tests.integration.conftest import LabInfo

pytestmark = pytest.mark.lab

CONTACT_MEMBER = "bread-coop"
NOTIFY = ("notify", "run", "--no-backups", "--json")


@dataclass
class Health:
    """The deployed lab, the mailbox standing in for the co-op's contact, and TLS roots."""

    info: LabInfo
    contact: LabMailbox
    boxes: dict[str, LabMailbox]
    context: ssl.SSLContext
    container_prefix: str

    def on_host(self, host: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "exec", f"{self.container_prefix}{host}", *argv],
                              capture_output=True, text=True, timeout=120, check=False)

    def notify(self) -> dict[str, object]:
        proc = self.info.cli(*NOTIFY)
        assert proc.returncode in (0, 1), proc.stdout + proc.stderr
        data: dict[str, object] = json.loads(proc.stdout)
        return data


def subjects(box: LabMailbox, context: ssl.SSLContext, token: str) -> list[str]:
    """Subjects holding `token` in the mailbox's INBOX and Junk."""
    found = []
    with IMAPAt(box.mailbox.host_fqdn, box.mailbox.host_address, context) as imap:
        imap.login(box.mailbox.address, box.mailbox.password)
        for folder in ("INBOX", "Junk"):
            status, _ = imap.select(f'"{folder}"', readonly=True)
            if status != "OK":
                continue
            _, hits = imap.search(None, "SUBJECT", f'"{token}"')
            for number in hits[0].split():
                _, parts = imap.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                header = parts[0][1] if parts and isinstance(parts[0], tuple) else b""
                found.append(header.decode(errors="replace").strip())
    return found


def wait_for(box: LabMailbox, context: ssl.SSLContext, token: str, count: int,
             timeout: float = 120.0) -> list[str]:
    """Wait until `count` messages with `token` are in the mailbox; return their subjects."""
    deadline = time.monotonic() + timeout
    while True:
        found = subjects(box, context, token)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(3)


@pytest.fixture(scope="module")
def health(lab: LabInfo) -> Iterator[Health]:
    deployed = lab.cli("deploy", "--json")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    lab.cli("lab", "dns", "sync", "--name", lab.name, check=True)
    the_lab = Lab(lab.name, lab.inventory)
    state = lab_state(the_lab)
    boxes = mailboxes(lab.inventory, state)
    contact = next(b for a, b in sorted(boxes.items()) if b.member == CONTACT_MEMBER)
    coop_file = lab.inventory / "coop.yml"
    original = coop_file.read_bytes()
    text = original.decode()
    allowance = "    mail: {mailboxes: 20, quota_mb: 4096}\n"
    assert "contacts:\n  - admin@lab.test\n" in text and allowance in text, \
        "the sample co-op's contacts or allowances changed"
    # contacts reach no host (no redeploy); members may ask for git too, for one test
    atomic_write(coop_file, text.replace(
        "contacts:\n  - admin@lab.test\n", f"contacts:\n  - {contact.mailbox.address}\n",
    ).replace(allowance, allowance + "    git: {}\n"))
    try:
        yield Health(lab, contact, boxes, tls_context(acme_roots(the_lab, state)),
                     f"coophost-{lab.name}-")
    finally:
        atomic_write(coop_file, original)
    plan = lab.cli("plan", "--json")
    assert plan.returncode == 0, "the lab is not as the module found it:\n" + plan.stdout


def test_a_stopped_service_is_flagged_and_mailed_once_and_so_is_its_recovery(health: Health):
    # the host whose dovecot stops is not the one holding the contact's mailbox
    host = next(b.host for b in health.boxes.values() if b.host != health.contact.host)
    token = "dovecot.service is inactive"
    health.notify()  # whatever was news before this test is mailed and recorded now
    before = len(subjects(health.contact, health.context, token))
    stopped = health.on_host(host, "systemctl", "stop", "dovecot")
    assert stopped.returncode == 0, stopped.stderr
    try:
        status = health.info.cli("status", "--host", host, "--no-backups", "--json")
        assert status.returncode == 1, status.stdout + status.stderr
        bad = {c["key"]: c for c in json.loads(status.stdout)["checks"] if not c["ok"]}
        assert f"{host}/unit/dovecot.service" in bad, bad
        assert f"{host}/port/993" in bad, bad
        assert "systemctl status dovecot.service" in bad[f"{host}/unit/dovecot.service"]["advice"]
        text = health.info.cli("status", "--host", host, "--no-backups")
        assert text.returncode == 1 and "dovecot.service is inactive" in text.stdout

        first = health.notify()
        assert first["exit_code"] == 1
        assert [m for m in first["sent"] if token in m["subject"]], first  # type: ignore[union-attr]
        arrived = wait_for(health.contact, health.context, token, before + 1)
        assert len(arrived) == before + 1, arrived

        second = health.notify()  # the same state: nothing is mailed again
        assert second["sent"] == [], second
        time.sleep(10)
        assert len(subjects(health.contact, health.context, token)) == before + 1
    finally:
        started = health.on_host(host, "systemctl", "start", "dovecot")
    assert started.returncode == 0, started.stderr
    recovered_before = len(subjects(health.contact, health.context, "recovered"))
    deadline = time.monotonic() + 60
    while True:
        status = health.info.cli("status", "--host", host, "--no-backups", "--json")
        if status.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert status.returncode == 0, status.stdout
    third = health.notify()
    assert [m for m in third["sent"] if "recovered" in m["subject"]], third  # type: ignore[union-attr]
    arrived = wait_for(health.contact, health.context, "recovered", recovered_before + 1)
    assert len(arrived) == recovered_before + 1, arrived
    assert health.notify()["sent"] == []


def test_a_certificate_near_its_end_is_flagged(health: Health):
    host = health.contact.host
    normal = health.info.cli("status", "--host", host, "--no-backups", "--json")
    certs = [c for c in json.loads(normal.stdout)["checks"] if c["kind"] == "certificate"]
    assert certs and all(c["ok"] for c in certs), certs
    days = min(int(c["detail"].split("expires in ")[1].split()[0]) for c in certs)
    # pebble (Debian 12) issues certificates valid for years: a limit beyond the soonest end
    # makes the same real certificate "near its end"
    near = health.info.cli("status", "--host", host, "--no-backups", "--json",
                           "--cert-days", str(days + 1))
    assert near.returncode == 1, near.stdout + near.stderr
    flagged = [c for c in json.loads(near.stdout)["checks"]
               if c["kind"] == "certificate" and not c["ok"]]
    assert flagged and all("expires in" in c["detail"] for c in flagged), flagged
    assert all("certbot renew" in c["advice"] for c in flagged)


def test_members_see_only_their_units_health_in_the_member_shell(health: Health):
    full = health.info.cli("status", "--json")  # backups included: the results are recorded
    assert full.returncode in (0, 1), full.stdout + full.stderr
    # the member's forced command, as sshd on the control host runs it
    mine = health.info.cli("member-shell", CONTACT_MEMBER,
                           env={"SSH_ORIGINAL_COMMAND": "status --json"})
    assert mine.returncode == 0, mine.stdout + mine.stderr
    shown = json.loads(mine.stdout)["health"]
    assert shown, "the member shell shows no health after a full status run"
    assert any(c["kind"] == "backup" for c in shown)
    # a deploy's summary may name any member's unit on the host: sysadmins only
    assert not any(c["kind"] == "deploy" for c in shown), shown
    others = {slug for slug in ("ada-books", "cycle-works", "dune-press")}
    for check in shown:
        assert not any(slug in check["detail"] for slug in others), check


def test_a_member_is_mailed_when_its_request_is_approved(health: Health):
    slug = "ada-books"
    box = health.boxes[f"ada@{slug}.test"]
    member_file = health.info.inventory / "members" / f"{slug}.yml"
    original = member_file.read_bytes()
    filed = health.info.cli("requests", "file", slug, "git")
    assert filed.returncode == 0, filed.stdout + filed.stderr
    listed = json.loads(health.info.cli("requests", "list", "--state", "pending", "--json",
                                        check=True).stdout)
    [request] = [r for r in listed if r["member"] == slug and r["service"] == "git"]
    token = f"request {request['id']} (git) approved"
    try:
        health.info.cli("requests", "approve", str(request["id"]), check=True)
        sent = health.notify()["sent"]
        assert [m for m in sent if token in m["subject"]  # type: ignore[union-attr]
                and m["to"] == [f"ada@{slug}.test"]], sent
        assert wait_for(box, health.context, token, 1), f"no '{token}' in {box.mailbox.address}"
        again = health.notify()["sent"]
        assert not [m for m in again if token in m["subject"]], again  # type: ignore[union-attr]
    finally:
        # the approval placed a git unit in the member file: the lab goes back to as it was
        atomic_write(member_file, original)


def test_doctor_checks_dns_mail_between_hosts_and_acme_from_each_host(health: Health):
    proc = health.info.cli("doctor", "--no-backups", "--json")
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    checks = json.loads(proc.stdout)["checks"]
    by_kind: dict[str, list[dict[str, object]]] = {}
    for check in checks:
        by_kind.setdefault(str(check["kind"]), []).append(check)
    mail_hosts = {b.host for b in health.boxes.values()}
    smtp = by_kind["mail between hosts"]
    assert {c["host"] for c in smtp} >= mail_hosts and all(c["ok"] for c in smtp), smtp
    assert len(by_kind["acme"]) >= len(mail_hosts) and all(c["ok"] for c in by_kind["acme"])
    assert by_kind["dns"] and all(c["ok"] for c in by_kind["dns"]), by_kind["dns"]
