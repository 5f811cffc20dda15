"""Members on real lab hosts: a request approved and deployed, the member shell over SSH (to
the lab's control host) holding each member to its own data, suspension and resumption, data
takeout with checksums, and departure.

A new member, fern-studio, joins during the test with its own SSH key; ada-books gets a key
too, so two members speak to the same shell.
"""

from __future__ import annotations

import email
import hashlib
import imaplib
import json
import smtplib
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from coophost.fsutil import atomic_write
from coophost.lab.keys import ssh_keypair
from coophost.lab.lab import Lab, LabState
from coophost.lab.mailcheck import LabMailbox, acme_roots, lab_state, mailboxes
from coophost.lab.mailprobe import IMAPAt, SMTPAt, dns_txt, fetch, probe, submit, tls_context
from tests.integration.conftest import LabInfo, record

pytestmark = pytest.mark.lab

FERN = "fern-studio"
ADA = "ada-books"
SENT: dict[str, str] = {}  # subject tokens of messages sent to fern, by when they were sent


@dataclass
class Members:
    """The lab, the control host's address and each member's private key file."""

    info: LabInfo
    lab: Lab
    state: LabState
    keys: dict[str, Path]
    roots: str

    def shell(self, slug: str, *words: str, timeout: float = 300
              ) -> subprocess.CompletedProcess[str]:
        """`coophost --remote` as the member `slug`, from the member's own key."""
        argv = ["--remote", f"root@127.0.0.1:{self.state.control_port}", "--identity",
                str(self.keys[slug]), "--known-hosts", str(self.info.inventory / "known_hosts"),
                *words]
        proc = subprocess.run([sys.executable, "-m", "coophost", *argv],
                              capture_output=True, text=True, timeout=timeout, check=False)
        record(argv, proc.stdout, proc.stderr)
        return proc

    def deploy(self) -> None:
        proc = self.info.cli("deploy", "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def boxes(self) -> dict[str, LabMailbox]:
        return mailboxes(self.info.inventory, self.state)

    def dns(self):  # type: ignore[no-untyped-def]
        return dns_txt("127.0.0.1", self.state.dns_port)


@pytest.fixture(scope="module")
def members(lab: LabInfo, tmp_path_factory: pytest.TempPathFactory) -> Members:
    the_lab = Lab(lab.name, lab.inventory)
    state = lab_state(the_lab)
    folder = tmp_path_factory.mktemp("member-keys")
    keys = {}
    for slug in (FERN, ADA):
        pair = ssh_keypair(f"{slug}@laptop")
        keys[slug] = folder / slug
        atomic_write(keys[slug], pair.private, mode=0o600)
        (folder / f"{slug}.pub").write_text(pair.public + "\n")
    lab.cli("member", "add", FERN, "--name", "Fern Design Studio", "--contact",
            "hello@fern-studio.test", "--domain", "fern-studio.test", "--ssh-key",
            (folder / f"{FERN}.pub").read_text().strip(), check=True)
    lab.cli("member", "edit", ADA, "--add-ssh-key", (folder / f"{ADA}.pub").read_text().strip(),
            check=True)
    lab.cli("members", "authorize", "--file", str(the_lab.control_authorized_keys), check=True)
    found = Members(lab, the_lab, state, keys, acme_roots(the_lab, state))
    found.deploy()
    lab.cli("lab", "dns", "sync", "--name", lab.name, check=True)
    return found


def test_a_member_request_approved_and_deployed_works(members: Members):
    filed = members.shell(FERN, "request", "mail", "--set", "mailboxes=[fern, orders]",
                          "--set", "quota_mb=256")
    assert filed.returncode == 0, filed.stderr
    listed = json.loads(members.info.cli("requests", "list", "--state", "pending", "--json",
                                         check=True).stdout)
    [request] = [r for r in listed if r["member"] == FERN]
    assert (request["service"], request["filed_by"]) == ("mail", f"member {FERN}")
    assert request["settings"] == {"mailboxes": ["fern", "orders"], "quota_mb": 256}
    before = json.loads(members.shell(FERN, "status", "--json").stdout)
    assert before["requests"][0]["state"] == "pending" and "mail" not in before["services"]
    members.info.cli("requests", "approve", str(request["id"]), "--why", "welcome",
                     check=True)
    approved = json.loads(members.shell(FERN, "status", "--json").stdout)
    assert approved["requests"][0]["state"] == "approved"
    assert approved["services"]["mail"]["state"] == "pending"
    members.deploy()
    members.info.cli("lab", "dns", "sync", "--name", members.info.name, check=True)
    after = json.loads(members.shell(FERN, "status", "--json").stdout)
    assert after["requests"][0]["state"] == "deployed"
    assert after["services"]["mail"]["state"] == "deployed"
    audit = [json.loads(line) for line in
             (members.info.inventory / "audit.log").read_text().splitlines()]
    assert [(e["action"], e["request"]) for e in audit if e.get("member") == FERN] == [
        ("request filed", request["id"]), ("request approved", request["id"])]
    # and the new mailbox works: a message from another member arrives, signed, over TLS
    boxes = members.boxes()
    sender, fern = boxes[f"ada@{ADA}.test"], boxes["fern@fern-studio.test"]
    result = probe(sender.mailbox, fern.mailbox, members.roots, members.dns())
    outcome = {c.name: c.ok for c in result.checks}
    assert outcome["submission"] and outcome["delivery"] and outcome["dkim"], outcome
    if sender.host != fern.host:
        assert outcome["tls between hosts"], outcome
    subject = email.message_from_bytes(result.delivered)["Subject"]
    SENT["before suspension"] = str(subject).split()[0]


# What a member sends, and the reason the refusal must name (the rule or limit that refused
# it: removing that rule or limit makes the refusal name another one, and the test fail).
HOSTILE = [
    (["status", "--member", ADA], "No such option '--member'"),
    (["status", ADA], "unexpected extra argument"),
    (["export", ADA], "unexpected extra argument"),
    (["export", "--member", ADA], "No such option '--member'"),
    (["request", "mail", "--member", ADA], "No such option '--member'"),
    (["status;", "cat", "/etc/shadow"], "'status;' is not a member verb"),
    (["status", "&&", "id"], "unexpected extra arguments"),
    (["$(id)"], "'$(id)' is not a member verb"),
    (["`id`"], "'`id`' is not a member verb"),
    (["dns", "|", "sh"], "unexpected extra arguments"),
    (["member-shell", ADA], "'member-shell' is not a member verb"),
    # `--` ends the client's own options: the server gets `-i / status`
    (["--", "-i", "/", "status"], "'-i' is not a member verb"),
    (["deploy", "--all"], "'deploy' is not a member verb"),
    (["lab", "ssh", "h1"], "'lab' is not a member verb"),
    (["request", "mail", "--set", "mailboxes=[\"$(reboot)\"]"],
     "mailboxes[0]: '$(reboot)': must be a lowercase mail name"),
    (["status", "A" * 10000], "command too long"),
    (["status"] * 60, "too many arguments (60; at most 40)"),
]


@pytest.mark.parametrize(("words", "reason"), HOSTILE,
                         ids=[" ".join(words)[:40] for words, _ in HOSTILE])
def test_member_shell_refuses_anything_but_the_members_own_verbs(members: Members, words,
                                                                 reason):
    ada_file = (members.info.inventory / "members" / f"{ADA}.yml").read_text()
    proc = members.shell(FERN, *words)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("refused: ") and reason in proc.stderr, proc.stderr
    assert ADA not in proc.stdout and "bread-coop" not in proc.stdout
    assert (members.info.inventory / "members" / f"{ADA}.yml").read_text() == ada_file


# Raw command strings, sent by plain `ssh` (no quoting client): the server splits them itself.
RAW = [
    ("status; cat /etc/shadow", "'status;' is not a member verb"),
    ("status && id", "unexpected extra arguments"),
    ("status $(id)", "unexpected extra argument ($(id))"),
    ("status 'unbalanced", "cannot read the command: No closing quotation"),
    ("status \x1b[2J", "control characters are not accepted"),
    ("status " + "A" * 3000, "command too long (3007 characters; at most 2048)"),
    (" ".join(["status"] * 45), "too many arguments (45; at most 40)"),
]


@pytest.mark.parametrize(("command", "reason"), RAW,
                         ids=[repr(command)[:30] for command, _ in RAW])
def test_member_shell_refuses_raw_commands_from_plain_ssh(members: Members, command: str,
                                                          reason: str):
    argv = ["ssh", "-p", str(members.state.control_port), "-i", str(members.keys[FERN]),
            "-o", f"UserKnownHostsFile={members.info.inventory / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-T", "root@127.0.0.1", command]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    record(argv[:-1], proc.stdout, proc.stderr)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("refused: ") and reason in proc.stderr, proc.stderr
    assert ADA not in proc.stdout and "uid=" not in proc.stdout
    # and the same plain ssh runs a member verb, so the refusals are the shell's
    if command == RAW[0][0]:
        ok = subprocess.run([*argv[:-1], "status --json"], capture_output=True, text=True,
                            timeout=120, check=False)
        assert ok.returncode == 0 and json.loads(ok.stdout)["member"] == FERN, ok.stderr


def test_a_member_cannot_see_or_cancel_another_members_request(members: Members):
    filed = members.shell(ADA, "request", "mail", "--set", "quota_mb=512")
    assert filed.returncode == 0, filed.stderr
    request_id = filed.stdout.split()[1].rstrip(":")
    fern = json.loads(members.shell(FERN, "status", "--json").stdout)
    assert all(r["id"] != int(request_id) for r in fern["requests"])
    refused = members.shell(FERN, "cancel", request_id)
    assert refused.returncode == 2 and f"no request {request_id}" in refused.stderr
    assert members.shell(ADA, "cancel", request_id).returncode == 0


def test_member_shell_gives_no_pty_and_no_forwarding(members: Members):
    client = paramiko.SSHClient()
    client.load_host_keys(str(members.info.inventory / "known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect("127.0.0.1", port=members.state.control_port, username="root",
                   key_filename=str(members.keys[FERN]), look_for_keys=False, allow_agent=False)
    try:
        transport = client.get_transport()
        assert transport is not None
        with pytest.raises(paramiko.ChannelException):
            transport.open_channel("direct-tcpip", ("127.0.0.1", members.state.dns_port),
                                   ("127.0.0.1", 0))
        channel = transport.open_session()
        with pytest.raises(paramiko.SSHException):
            channel.get_pty()
        # an interactive login gets the forced command too: the member verbs' help, no shell
        shell = transport.open_session()
        shell.exec_command("/bin/sh -c id")
        output = shell.makefile("rb").read().decode()
        assert shell.recv_exit_status() == 2
        assert "uid=" not in output
    finally:
        client.close()


def _imap_login(box: LabMailbox, context) -> None:  # type: ignore[no-untyped-def]
    with IMAPAt(box.mailbox.host_fqdn, box.mailbox.host_address, context) as imap:
        imap.login(box.mailbox.address, box.mailbox.password)


def _smtp_login(box: LabMailbox, context) -> None:  # type: ignore[no-untyped-def]
    with SMTPAt(box.mailbox.host_fqdn, box.mailbox.host_address, 587) as smtp:
        smtp.starttls(context=context)
        smtp.login(box.mailbox.address, box.mailbox.password)


def test_suspended_member_cannot_log_in_and_after_resume_can_with_mail_intact(
        members: Members):
    context = tls_context(members.roots)
    boxes = members.boxes()
    fern, ada = boxes["fern@fern-studio.test"], boxes[f"ada@{ADA}.test"]
    members.info.cli("member", "suspend", FERN, "--why", "test", check=True)
    members.deploy()
    with pytest.raises(imaplib.IMAP4.error):
        _imap_login(fern, context)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        _smtp_login(fern, context)
    # mail still arrives while suspended (coop.yml suspended_mail: accept)
    token = "coophost-suspended-" + hashlib.sha256(fern.mailbox.address.encode()).hexdigest()[:8]
    submit(ada.mailbox, fern.mailbox.address, f"{token} while suspended", "kept\n", context)
    SENT["while suspended"] = token
    # the co-op switches to `suspended_mail: bounce` in coop.yml: through coophost's deploy,
    # fern's domain refuses mail with 5.2.1 and another member's still takes it
    coop_file = members.info.inventory / "coop.yml"
    coop_text = coop_file.read_text()
    assert "\nsuspended_mail: accept\n" in coop_text, coop_text
    try:
        atomic_write(coop_file, coop_text.replace("\nsuspended_mail: accept\n",
                                                  "\nsuspended_mail: bounce\n"))
        members.deploy()
        for box, refused in ((fern, True), (ada, False)):
            with SMTPAt(box.mailbox.host_fqdn, box.mailbox.host_address, 25) as smtp:
                smtp.starttls(context=context)
                smtp.ehlo()
                assert smtp.mail("someone@example.org")[0] == 250
                code, text = smtp.rcpt(box.mailbox.address)
                if refused:
                    assert (code, b"5.2.1" in text) == (550, True), (code, text)
                else:
                    assert code == 250, (code, text)
    finally:
        atomic_write(coop_file, coop_text)  # accept again, deployed with the resume below
    members.info.cli("member", "resume", FERN, check=True)
    members.deploy()
    _imap_login(fern, context)
    _smtp_login(fern, context)
    for when, subject_token in SENT.items():
        assert fetch(fern.mailbox, subject_token, context, timeout=60) is not None, when


def _plan_shows_rotation(members: Members, mailbox: str) -> None:
    plan = members.info.cli("plan", "--member", ADA)
    assert plan.returncode == 1, plan.stdout + plan.stderr
    assert f"~ {ADA}/mail: change" in plan.stdout, plan.stdout
    assert f"(password) mailbox_passwords/{mailbox}: password rotated" in plan.stdout, \
        plan.stdout


def _logins(box: LabMailbox, old: str, new: str, context) -> None:  # type: ignore[no-untyped-def]
    """IMAP refuses `old` and takes `new` (the vault's password, read now, is `new`)."""
    assert box.mailbox.password == new
    with IMAPAt(box.mailbox.host_fqdn, box.mailbox.host_address, context) as imap, \
            pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED|failed"):
        imap.login(box.mailbox.address, old)
    _imap_login(box, context)


def test_a_rotated_mailbox_password_works_after_the_deploy_and_the_old_one_no_longer(
        members: Members):
    from tests.integration.conftest import RUNNER_COPIES
    from tests.integration.secretscan import files_under, leaks

    context = tls_context(members.roots)
    address = f"orders@{ADA}.test"
    first = members.boxes()[address].mailbox.password
    _imap_login(members.boxes()[address], context)  # the password before: it works
    # a sysadmin rotates it (shown once, in the JSON, for hand-over)
    proc = members.info.cli("secrets", "rotate", ADA, "--mailbox", "orders", "--json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    [entry] = shown["rotated"]
    second = entry["password"]
    assert entry["login"] == address and second != first
    assert "coophost deploy" in shown["next"]
    _plan_shows_rotation(members, "orders")
    members.deploy()
    assert members.info.cli("plan", "--member", ADA).returncode == 0
    _logins(members.boxes()[address], first, second, context)
    # the member rotates it from the member shell (shown once, on its stdout)
    proc = members.shell(ADA, "password", "orders")
    assert proc.returncode == 0, proc.stderr
    [line] = [x for x in proc.stdout.splitlines() if x.startswith("new password for ")]
    assert line.startswith(f"new password for {address}: ")
    third = line.rsplit(" ", 1)[1]
    assert third not in (first, second)
    _plan_shows_rotation(members, "orders")
    members.deploy()
    _logins(members.boxes()[address], second, third, context)
    # audited: who and which mailbox, never a password
    audit_text = (members.info.inventory / "audit.log").read_text()
    events = [json.loads(x) for x in audit_text.splitlines()]
    rotated = [e for e in events if e["action"] == "password rotated" and e["member"] == ADA]
    assert [e["by"].split()[0] for e in rotated[-2:]] == ["sysadmin", "member"]
    assert rotated[-1]["by"] == f"member {ADA}"
    assert all(e["mailboxes"] == ["orders"] for e in rotated[-2:])
    found = leaks([first, second, third],
                  [("audit.log", audit_text), *files_under(RUNNER_COPIES)])
    assert not found, found


def _extract(archive: Path, into: Path) -> dict[str, str]:
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(into, filter="data")
    sums = {}
    for line in (into / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        sums[name] = digest
    return sums


def test_export_holds_the_members_mail_and_every_checksum_matches(members: Members,
                                                                  tmp_path: Path):
    archive = tmp_path / "fern.tar.gz"
    proc = members.shell(FERN, "export", "--out", str(archive))
    assert proc.returncode == 0, proc.stderr
    sums = _extract(archive, tmp_path / "x")
    assert sums, "the archive lists files"
    for name, digest in sums.items():
        assert hashlib.sha256((tmp_path / "x" / name).read_bytes()).hexdigest() == digest, name
    manifest = json.loads((tmp_path / "x" / "MANIFEST.json").read_text())
    assert manifest["member"] == FERN
    assert {f["path"] for f in manifest["files"]} == set(sums)
    assert all("/fern-studio.test/" in name for name in sums)  # nothing of another member
    mail = b"".join((tmp_path / "x" / name).read_bytes() for name in sums
                    if "/Maildir/" in name and ("/cur/" in name or "/new/" in name))
    for when, token in SENT.items():
        assert token.encode() in mail, when
    # the sysadmins' command makes the same archive content
    admin = tmp_path / "admin.tar.gz"
    members.info.cli("member", "export", FERN, "--out", str(admin), check=True)
    assert set(_extract(admin, tmp_path / "y")) == set(sums)


def test_depart_with_a_failing_export_leaves_the_member_active(members: Members,
                                                              tmp_path: Path):
    """The export cannot read the member's host (its sshd is stopped): departure stops there,
    the member stays active and no takeout, whole or partial, is written."""
    fern = members.boxes()["fern@fern-studio.test"]
    container = members.lab.container(fern.host)
    member_file = members.info.inventory / "members" / f"{FERN}.yml"
    audit_log = members.info.inventory / "audit.log"
    before, audit_before = member_file.read_text(), audit_log.read_text()
    takeout = tmp_path / "takeout"
    takeout.mkdir()
    subprocess.run(["docker", "exec", container, "systemctl", "stop", "ssh"], check=True,
                   timeout=60)
    try:
        proc = members.info.cli("member", "depart", FERN, "--out", str(takeout / "fern.tar.gz"))
    finally:
        subprocess.run(["docker", "exec", container, "systemctl", "start", "ssh"],
                       check=True, timeout=60)
    assert proc.returncode not in (0, 1), (proc.returncode, proc.stdout, proc.stderr)
    assert list(takeout.iterdir()) == []
    assert member_file.read_text() == before
    assert audit_log.read_text() == audit_before
    shown = json.loads(members.info.cli("member", "show", FERN, "--json", check=True).stdout)
    assert shown["status"] == "active"


def test_depart_exports_first_then_stops_logins(members: Members, tmp_path: Path):
    context = tls_context(members.roots)
    fern = members.boxes()["fern@fern-studio.test"]
    archive = tmp_path / "fern-departure.tar.gz"
    members.info.cli("member", "depart", FERN, "--out", str(archive), check=True)
    sums = _extract(archive, tmp_path / "d")
    assert any("/Maildir/" in name for name in sums)
    shown = json.loads(members.info.cli("member", "show", FERN, "--json", check=True).stdout)
    assert shown["status"] == "departed"
    members.deploy()
    with pytest.raises(imaplib.IMAP4.error):
        _imap_login(fern, context)
    # still in the shell to see its status; services stay until the retention period ends
    status = json.loads(members.shell(FERN, "status", "--json").stdout)
    assert status["status"] == "departed" and "mail" in status["services"]
    due = json.loads(members.info.cli("members", "purge", "--dry-run", "--json",
                                      check=True).stdout)
    assert due["purged"] == []
