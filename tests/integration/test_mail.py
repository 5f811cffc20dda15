"""Mail on real lab hosts, end to end: submission, delivery between hosts, DKIM against the
published key, no relay, TLS 1.2+, no AUTH before TLS, fail2ban, isolation between members,
the lab ACME CA's certificates, and a redeploy that changes nothing and loses nothing.

Traffic goes only to the lab's hosts on the lab network and to 127.0.0.1 (lab DNS and ACME).
fail2ban counts refusals too (postfix's aggressive mode): every test starts with no bans, and
the ban test attacks from another lab host so the controller itself is never the one banned.
"""

from __future__ import annotations

import base64
import email
import imaplib
import json
import smtplib
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from coophost.dnsops import DNSMASQ_MARKER
from coophost.lab.lab import Lab, LabState
from coophost.lab.mailcheck import LabMailbox, acme_roots, lab_state, mailboxes
from coophost.mailprobe import (
    IMAPAt,
    ProbeResult,
    SMTPAt,
    dns_txt,
    fetch,
    probe,
    tls_context,
    verify_dkim,
)
from tests.integration.conftest import HOSTS, LabInfo

pytestmark = pytest.mark.lab

OUTSIDE = "someone@example.org"  # never contacted: the hosts must refuse to relay to it


@dataclass
class MailLab:
    """The deployed lab with its DNS synced, its mailboxes, and one probe already sent."""

    info: LabInfo
    lab: Lab
    state: LabState
    boxes: dict[str, LabMailbox]
    roots: str
    first: ProbeResult
    sender: LabMailbox
    recipient: LabMailbox

    def host(self, name: str):  # type: ignore[no-untyped-def]
        return next(h for h in self.state.hosts if h.name == name)

    def context(self) -> ssl.SSLContext:
        return tls_context(self.roots)

    def dns(self):  # type: ignore[no-untyped-def]
        return dns_txt("127.0.0.1", self.state.dns_port)


def on_host(container: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command inside a lab host's container."""
    return subprocess.run(["docker", "exec", container, *argv], capture_output=True, text=True,
                          check=check, timeout=120)


def two_hosts(boxes: dict[str, LabMailbox]) -> tuple[LabMailbox, LabMailbox]:
    ordered = sorted(boxes.values(), key=lambda b: b.mailbox.address)
    for a in ordered:
        for b in ordered:
            if a.host != b.host and a.member != b.member:
                return a, b
    raise AssertionError(f"the sample co-op has no members' mail on two hosts: {boxes}")


@pytest.fixture(scope="module")
def mail(lab: LabInfo) -> MailLab:
    deployed = lab.cli("deploy", "--json")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    lab.cli("lab", "dns", "sync", "--name", lab.name, check=True)
    the_lab = Lab(lab.name, lab.inventory)
    state = lab_state(the_lab)
    boxes = mailboxes(lab.inventory, state)
    sender, recipient = two_hosts(boxes)
    roots = acme_roots(the_lab, state)
    first = probe(sender.mailbox, recipient.mailbox, roots,
                  dns_txt("127.0.0.1", state.dns_port))
    return MailLab(lab, the_lab, state, boxes, roots, first, sender, recipient)


@pytest.fixture(autouse=True)
def no_bans(lab: LabInfo) -> Iterator[None]:
    """Lift every fail2ban ban on every lab host before each test."""
    def unban() -> None:
        for index in range(1, HOSTS + 1):
            on_host(f"coophost-{lab.name}-h{index}", "fail2ban-client", "unban", "--all",
                    check=False)
    unban()
    yield


def test_dns_check_sees_the_records_sync_serves(mail: MailLab):
    assert mail.lab.sync_records(DNSMASQ_MARKER + "\n")  # the lab DNS without member records
    empty = mail.info.cli("dns", "check", "--json")
    assert empty.returncode == 1, empty.stdout + empty.stderr
    statuses = {r["status"] for r in json.loads(empty.stdout)["records"]
                if r["type"] in ("MX", "TXT")}
    assert statuses == {"missing"}
    mail.info.cli("lab", "dns", "sync", "--name", mail.info.name, check=True)
    synced = mail.info.cli("dns", "check", "--json")
    assert synced.returncode == 0, synced.stdout
    report = json.loads(synced.stdout)
    assert report["ok"] is True
    types = {r["type"] for r in report["records"]}
    assert {"MX", "TXT", "A"} <= types
    assert all(r["status"] == "ok" for r in report["records"])


def test_submission_delivers_to_another_member_on_another_host(mail: MailLab):
    assert mail.sender.host != mail.recipient.host
    assert mail.sender.member != mail.recipient.member
    assert [c.name for c in mail.first.checks] == [
        "submission", "delivery", "dkim", "tls between hosts"]
    assert mail.first.ok, [c.as_json() for c in mail.first.checks]
    # and the CLI's own proof, as `make demo` runs it
    proof = mail.info.cli("lab", "mail-check", "--name", mail.info.name, "--json")
    assert proof.returncode == 0, proof.stdout + proof.stderr
    report = json.loads(proof.stdout)
    assert report["ok"] is True
    assert report["from_host"] != report["to_host"]


def test_dkim_signature_verifies_against_the_published_key(mail: MailLab):
    raw = mail.first.delivered
    ok, domain = verify_dkim(raw, mail.dns())
    assert (ok, domain) == (True, mail.sender.mailbox.address.split("@")[1])
    # the same check fails on a changed body or with another domain's key
    assert not verify_dkim(raw.replace(b"prove mail", b"prove mall"), mail.dns())[0]
    other = next(b for b in mail.boxes.values() if b.member != mail.sender.member)
    other_domain = other.mailbox.address.split("@")[1].encode()
    own_domain = domain.encode()
    published = mail.dns()

    def wrong_key(name: bytes) -> bytes | None:
        return published(name.replace(own_domain, other_domain))

    assert not verify_dkim(raw, wrong_key)[0]


@pytest.mark.parametrize("port", [25, 587])
def test_unauthenticated_relay_to_outside_is_refused(mail: MailLab, port: int):
    target = mail.recipient
    host = mail.host(target.host)
    with SMTPAt(host.fqdn, host.ip, port) as smtp:
        smtp.starttls(context=mail.context())
        smtp.ehlo()
        assert smtp.mail(mail.sender.mailbox.address)[0] == 250
        code, text = smtp.rcpt(OUTSIDE)
        assert 500 <= code < 600, (code, text)
        if port == 25:  # port 25 takes mail for members placed here, only that
            assert smtp.rcpt(target.mailbox.address)[0] == 250
        smtp.rset()


@pytest.mark.parametrize("target", [("465", "tls"), ("993", "tls"), ("587", "starttls"),
                                    ("25", "starttls")])
def test_tls_1_1_refused_and_1_2_accepted(mail: MailLab, target: tuple[str, str]):
    port, kind = int(target[0]), target[1]
    host = mail.host(mail.recipient.host)

    def handshake(version: ssl.TLSVersion) -> str:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=mail.roots)
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # so the client really offers TLS 1.1
        with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = context.maximum_version = version
        if kind == "starttls":
            with SMTPAt(host.fqdn, host.ip, port) as smtp:
                smtp.starttls(context=context)
                return str(smtp.sock.version())  # type: ignore[union-attr]
        with socket.create_connection((host.ip, port), 10) as raw, \
                context.wrap_socket(raw, server_hostname=host.fqdn) as tls:
            return str(tls.version())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
            handshake(old)
    assert handshake(ssl.TLSVersion.TLSv1_2) == "TLSv1.2"


def test_auth_not_offered_before_starttls(mail: MailLab):
    host = mail.host(mail.sender.host)
    box = mail.sender.mailbox
    with SMTPAt(host.fqdn, host.ip, 587) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth")
        token = base64.b64encode(f"\0{box.address}\0{box.password}".encode()).decode()
        code, _ = smtp.docmd("AUTH", f"PLAIN {token}")
        assert code >= 500  # refused in clear text, the password never checked
        smtp.starttls(context=mail.context())
        smtp.ehlo()
        assert smtp.has_extn("auth")
        smtp.login(box.address, box.password)
    with SMTPAt(host.fqdn, host.ip, 25) as smtp:  # port 25 never offers AUTH
        smtp.starttls(context=mail.context())
        smtp.ehlo()
        assert not smtp.has_extn("auth")


def test_member_a_cannot_read_member_b(mail: MailLab):
    boxes = sorted(mail.boxes.values(), key=lambda b: b.mailbox.address)
    same_host = [(a, b) for a in boxes for b in boxes
                 if a.member != b.member and a.host == b.host]
    a, b = same_host[0] if same_host else (mail.sender, mail.recipient)
    host = mail.host(b.host)
    # A's password does not open B's mailbox
    with IMAPAt(host.fqdn, host.ip, mail.context()) as imap, \
            pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED|failed"):
        imap.login(b.mailbox.address, a.mailbox.password)
    if a.host != b.host:
        return
    b_domain = b.mailbox.address.split("@")[1]
    b_user = b.mailbox.address.split("@")[0]
    with IMAPAt(host.fqdn, host.ip, mail.context()) as imap:
        imap.login(a.mailbox.address, a.mailbox.password)
        _, listing = imap.list('""', "*")
        names = b" ".join(x for x in listing if isinstance(x, bytes)).decode()
        assert b_domain not in names and b.member not in names
        for guess in (b.mailbox.address, f"../../{b_domain}/{b_user}/Maildir",
                      f"~{b_user}", f"/var/mail/vhosts/{b_domain}/{b_user}",
                      "/var/mail/units"):
            status, _ = imap.select(f'"{guess}"', readonly=True)
            assert status == "NO", guess


def test_lab_ca_certificate_on_465_and_993(mail: MailLab):
    host = mail.host(mail.recipient.host)
    for port in (465, 993):
        with socket.create_connection((host.ip, port), 10) as raw, \
                mail.context().wrap_socket(raw, server_hostname=host.fqdn) as tls:
            cert = tls.getpeercert()
            issuer = dict(item[0] for item in cert["issuer"])
            names = [value for kind, value in cert["subjectAltName"] if kind == "DNS"]
            assert host.fqdn in names
            assert "Pebble" in issuer.get("commonName", ""), issuer
        # and nothing else vouches for it: the system's public roots refuse it
        with socket.create_connection((host.ip, port), 10) as raw, \
                pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(raw, server_hostname=host.fqdn)


ATTACK = """
import imaplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
for attempt in range(8):
    try:
        imap = imaplib.IMAP4_SSL(sys.argv[1], 993, ssl_context=ctx, timeout=10)
        imap.login(sys.argv[2], "not-the-password-%d" % attempt)
    except Exception as exc:
        print("attempt", attempt, type(exc).__name__)
"""

PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 993), 5).close()
    print("open")
except OSError as exc:
    print("blocked", type(exc).__name__)
"""


def test_fail2ban_bans_repeated_wrong_passwords(mail: MailLab):
    target = mail.host(mail.recipient.host)
    attacker = next(h for h in mail.state.hosts if h.name != target.name)
    container = mail.lab.container(target.name)
    try:
        on_host(mail.lab.container(attacker.name), "python3", "-c", ATTACK, target.ip,
                mail.recipient.mailbox.address)
        deadline = time.monotonic() + 60
        banned = ""
        while time.monotonic() < deadline:
            banned = on_host(container, "fail2ban-client", "get", "dovecot", "banip").stdout
            if attacker.ip in banned.split():
                break
            time.sleep(1)
        assert attacker.ip in banned.split(), banned
        blocked = on_host(mail.lab.container(attacker.name), "python3", "-c", PROBE, target.ip)
        assert blocked.stdout.startswith("blocked"), blocked.stdout
        # the ban is the attacker's alone: the controller still reaches the same port
        socket.create_connection((target.ip, 993), 5).close()
    finally:
        on_host(container, "fail2ban-client", "unban", "--all", check=False)
    after = on_host(mail.lab.container(attacker.name), "python3", "-c", PROBE, target.ip)
    assert after.stdout.startswith("open"), after.stdout


def _inbox(mail: MailLab, box: LabMailbox) -> list[bytes]:
    with IMAPAt(box.mailbox.host_fqdn, box.mailbox.host_address, mail.context()) as imap:
        imap.login(box.mailbox.address, box.mailbox.password)
        imap.select("INBOX", readonly=True)
        _, data = imap.search(None, "ALL")
        ids = data[0].split() if data and data[0] else []
        found = []
        for number in ids:
            _, parts = imap.fetch(number, "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            found += [bytes(p[1]).strip() for p in parts if isinstance(p, tuple)]
        return found


def test_redeploy_changes_nothing_and_loses_no_mail(mail: MailLab):
    subject = email.message_from_bytes(mail.first.delivered)["Subject"]
    token = str(subject).split()[0]
    before = _inbox(mail, mail.recipient)
    assert before, "the first probe's message is in the recipient's INBOX"
    proc = mail.info.cli("deploy", "--all", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["hosts"], report
    for name, host in report["hosts"].items():
        assert (host["status"], host["changed"], host["failed"]) == ("ok", 0, 0), (name, host)
    assert _inbox(mail, mail.recipient) == before
    again = fetch(mail.recipient.mailbox, token, mail.context(), timeout=5)
    assert again == mail.first.delivered
    # and mail still flows after it
    assert probe(mail.sender.mailbox, mail.recipient.mailbox, mail.roots, mail.dns()).ok
