"""Mail on real lab hosts, end to end: submission, delivery between hosts, DKIM against the
published key, no relay, TLS 1.2+, no AUTH before TLS, fail2ban, isolation between members,
the lab ACME CA's certificates, and a redeploy that changes nothing and loses nothing.

Traffic goes only to the lab's hosts on the lab network and to 127.0.0.1 (lab DNS and ACME).
fail2ban counts refusals too (postfix's aggressive mode): every test starts with no bans, and
the ban test attacks from another lab host so the controller itself is never the one banned.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import email
import imaplib
import json
import re
import smtplib
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from coophost.dns.ops import DNSMASQ_MARKER
from coophost.lab.lab import Lab, LabState
from coophost.lab.mailcheck import LabMailbox, acme_roots, lab_state, mailboxes
from coophost.lab.mailprobe import (
    IMAPAt,
    ProbeResult,
    SMTPAt,
    dns_txt,
    fetch,
    probe,
    submit,
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


def test_lab_probe_runs_each_available_services_own_probe(mail: MailLab):
    from coophost.registry.catalogue import load_catalogue

    proof = mail.info.cli("lab", "probe", "--name", mail.info.name, "--json")
    assert proof.returncode == 0, proof.stdout + proof.stderr
    report = json.loads(proof.stdout)
    assert set(report["services"]) == set(load_catalogue().available)
    assert report["ok"] is True
    checks = {c["name"]: c["ok"] for c in report["services"]["mail"]["checks"]}
    assert checks == {"submission": True, "delivery": True, "dkim": True,
                      "tls between hosts": True}


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


def _self_signed(name: str) -> tuple[str, bytes]:
    """A throwaway certificate and key (PEM) for `name`, for the local TLS 1.1 server."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@dataclass
class OldTLSServer:
    """A server on 127.0.0.1 that speaks TLS 1.1 (SECLEVEL=0), from the first byte or after
    an SMTP STARTTLS: the proof that the refusal test's client really offers TLS 1.1."""

    cert: str
    ports: dict[str, int]


@pytest.fixture(scope="module")
def old_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OldTLSServer]:
    cert, key = _self_signed("localhost")
    folder = tmp_path_factory.mktemp("old-tls")
    (folder / "cert.pem").write_text(cert)
    (folder / "key.pem").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    servers = {kind: socket.create_server(("127.0.0.1", 0)) for kind in ("tls", "starttls")}

    def serve(kind: str, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed at the end of the module
            with conn, contextlib.suppress(OSError):
                conn.settimeout(10)
                if kind == "starttls":
                    reader = conn.makefile("rb")
                    conn.sendall(b"220 localhost ESMTP\r\n")
                    while (line := reader.readline().upper()) and not line.startswith(b"STARTTLS"):
                        conn.sendall(b"250-localhost\r\n250 STARTTLS\r\n"
                                     if line.startswith(b"EHLO") else b"250 ok\r\n")
                    conn.sendall(b"220 go ahead\r\n")
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)

    for kind, server in servers.items():
        threading.Thread(target=serve, args=(kind, server), daemon=True).start()
    yield OldTLSServer(cert, {k: s.getsockname()[1] for k, s in servers.items()})
    for server in servers.values():
        server.close()


def _handshake(version: ssl.TLSVersion, cadata: str, fqdn: str, address: str, port: int,
               kind: str) -> str:
    """Speak TLS `version` only (SECLEVEL=0, so TLS 1.1 is really offered); return what was
    negotiated."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=cadata)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = version
    if kind == "starttls":
        with SMTPAt(fqdn, address, port) as smtp:
            smtp.starttls(context=context)
            return str(smtp.sock.version())  # type: ignore[union-attr]
    with socket.create_connection((address, port), 10) as raw, \
            context.wrap_socket(raw, server_hostname=fqdn) as tls:
        return str(tls.version())


@pytest.mark.parametrize("target", [("465", "tls"), ("993", "tls"), ("587", "starttls"),
                                    ("25", "starttls")])
def test_tls_1_1_refused_and_1_2_accepted(mail: MailLab, old_tls_server: OldTLSServer,
                                          target: tuple[str, str]):
    port, kind = int(target[0]), target[1]
    host = mail.host(mail.recipient.host)
    old = ssl.TLSVersion.TLSv1_1
    # the same client completes a TLS 1.1 handshake with a server that allows it, so the
    # refusal below is the host's and cannot pass because the client never offered TLS 1.1
    assert _handshake(old, old_tls_server.cert, "localhost", "127.0.0.1",
                      old_tls_server.ports[kind], kind) == "TLSv1.1"
    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
        _handshake(old, mail.roots, host.fqdn, host.ip, port, kind)
    assert _handshake(ssl.TLSVersion.TLSv1_2, mail.roots, host.fqdn, host.ip, port,
                      kind) == "TLSv1.2"


def _replies(smtp: smtplib.SMTP, wait: float) -> list[tuple[int, bytes]]:
    """Every SMTP reply the server sends within `wait` seconds of quiet (or until it closes)."""
    found = []
    assert smtp.sock is not None
    smtp.sock.settimeout(wait)
    with contextlib.suppress(TimeoutError, smtplib.SMTPServerDisconnected, OSError):
        while True:
            found.append(smtp.getreply())
    return found


def test_smtp_smuggling_bare_lf_does_not_start_a_second_message(mail: MailLab):
    """A "<LF>.<CR><LF>" inside DATA must not end the message: postfix would otherwise take
    the lines after it as the commands of a second message, forged from another sender."""
    box = mail.recipient.mailbox
    host = mail.host(mail.recipient.host)
    token = f"coophost-carrier-{time.time_ns()}"
    smuggled = f"coophost-smuggled-{time.time_ns()}"
    forged = f"{mail.sender.mailbox.address}"
    payload = (
        f"From: <{OUTSIDE}>\r\nTo: <{box.address}>\r\nSubject: {token}\r\n"
        f"Message-ID: <{token}@example.org>\r\n\r\nthe carrier message\r\n"
        # the smuggling: a bare LF before the dot, then a whole second transaction
        f"\n.\r\nMAIL FROM:<{forged}>\r\nRCPT TO:<{box.address}>\r\nDATA\r\n"
        f"From: <{forged}>\r\nTo: <{box.address}>\r\nSubject: {smuggled}\r\n"
        f"Message-ID: <{smuggled}@example.org>\r\n\r\nforged\r\n"
        "\r\n.\r\n").encode()
    with SMTPAt(host.fqdn, host.ip, 25) as smtp:
        smtp.starttls(context=mail.context())
        smtp.ehlo()
        assert smtp.mail(OUTSIDE)[0] == 250
        assert smtp.rcpt(box.address)[0] == 250
        smtp.putcmd("data")
        assert smtp.getreply()[0] == 354
        smtp.send(payload)  # as is: smtplib's own data() would fix the bare LF
        replies = _replies(smtp, 15)
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()
    codes = [code for code, _ in replies]
    assert codes and (codes == [250] or codes[0] >= 500), replies  # one message, or refused
    if codes == [250]:  # normalized: the smuggled lines are text of the carrier message
        carrier = fetch(box, token, mail.context(), timeout=90)
        assert carrier is not None, "the carrier message never arrived"
        assert smuggled.encode() in carrier
    assert fetch(box, smuggled, mail.context(), timeout=10) is None, \
        "the smuggled message was delivered as a message of its own"


def _expected_reader(settings: dict[str, object], boxes: dict[str, LabMailbox]) -> LabMailbox:
    """The mailbox postmaster@ of a member should reach: its postmaster mailbox, its
    postmaster alias's first mailbox, else its first mailbox (services/mail's aliases table)."""
    primary = settings["domains"][0]  # type: ignore[index]
    mailboxes_ = list(settings["mailboxes"])  # type: ignore[call-overload]
    aliases = dict(settings.get("aliases") or {})  # type: ignore[call-overload]
    if "postmaster" in mailboxes_:
        name = "postmaster"
    elif "postmaster" in aliases:
        name = next(t for t in aliases["postmaster"] if "@" not in t)
    else:
        name = mailboxes_[0]
    return boxes[f"{name}@{primary}"]


def test_postmaster_and_dmarc_reports_of_every_member_domain_are_delivered(mail: MailLab):
    """postmaster@ and the DMARC `rua` address coophost publishes, for every member domain,
    reach a mailbox (cycle-works has no postmaster mailbox or alias of its own)."""
    from coophost.registry.loader import load_registry

    members = load_registry(mail.info.inventory).registry.members
    records = json.loads(mail.info.cli("dns", "records", "--format", "json",
                                       check=True).stdout)
    rua: dict[str, list[str]] = {}
    for record in records:
        if record["type"] == "TXT" and record["name"].startswith("_dmarc."):
            text = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', record["value"]))
            tags = dict(part.strip().split("=", 1) for part in text.split(";") if "=" in part)
            rua[record["name"][len("_dmarc."):].rstrip(".")] = [
                uri.strip().removeprefix("mailto:").split("!")[0]
                for uri in tags["rua"].split(",")]
    member_of = {b.member for b in mail.boxes.values()}
    sent = []
    for slug in sorted(member_of):
        settings = members[slug].services["mail"]
        reader = _expected_reader(settings, mail.boxes)
        sender = mail.sender if mail.sender.member != slug else mail.recipient
        for domain in settings["domains"]:
            assert domain in rua, f"no DMARC record for {domain}: {sorted(rua)}"
            for address in {f"postmaster@{domain}", *rua[domain]}:
                token = f"coophost-role-{time.time_ns()}"
                submit(sender.mailbox, address, f"{token} to {address}", "report\n",
                       mail.context())
                sent.append((address, reader, token))
    assert any(b.member == "cycle-works" for _, b, _ in sent), "cycle-works is not placed"
    for address, reader, token in sent:
        assert fetch(reader.mailbox, token, mail.context(), timeout=90) is not None, \
            f"mail to {address} never reached {reader.mailbox.address}"


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
    # the sample co-op places ada-books and cycle-works on h2: without two members on one host
    # the folder checks below would prove nothing, so that is a failure, not a pass
    assert same_host, ("no two members' mail on one host: "
                       f"{sorted((b.member, b.host) for b in boxes)}")
    a, b = same_host[0]
    host = mail.host(b.host)
    # A's password opens neither B's mailbox on the same host nor one on another host
    other = next(x for x in boxes if x.member != a.member and x.host != a.host)
    for target in (b, other):
        there = mail.host(target.host)
        with IMAPAt(there.fqdn, there.ip, mail.context()) as imap, \
                pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED|failed"):
            imap.login(target.mailbox.address, a.mailbox.password)
    b_domain = b.mailbox.address.split("@")[1]
    b_user = b.mailbox.address.split("@")[0]
    with IMAPAt(host.fqdn, host.ip, mail.context()) as imap:
        imap.login(a.mailbox.address, a.mailbox.password)
        _, listing = imap.list('""', "*")
        names = b" ".join(x for x in listing if isinstance(x, bytes)).decode()
        assert "INBOX" in names, names  # the listing is A's own, not an empty answer
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


def test_fail2ban_bans_only_the_offender(mail: MailLab):
    """An attacker host is banned; a bystander host, which fail2ban does not exempt, is not.

    The controller (the lab network's gateway) is in every jail's ignoreip, so reaching a port
    from it proves nothing about who was banned: the bystander is another lab host.
    """
    target = mail.host(mail.recipient.host)
    others = [h for h in mail.state.hosts if h.name != target.name]
    assert len(others) >= 2, f"needs an attacker and a bystander besides {target.name}"
    attacker, bystander = others[0], others[1]
    container = mail.lab.container(target.name)
    exempt = on_host(container, "fail2ban-client", "get", "dovecot", "ignoreip").stdout
    assert bystander.ip not in exempt and attacker.ip not in exempt, exempt

    def reach(source: str) -> str:
        return on_host(mail.lab.container(source), "python3", "-c", PROBE, target.ip).stdout

    assert reach(bystander.name).startswith("open")
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
        assert reach(attacker.name).startswith("blocked")
        # the ban is the attacker's alone: a host that is not exempt still reaches the port
        assert bystander.ip not in on_host(container, "fail2ban-client", "get", "dovecot",
                                           "banip").stdout.split()
        assert reach(bystander.name).startswith("open")
    finally:
        on_host(container, "fail2ban-client", "unban", "--all", check=False)
    assert reach(attacker.name).startswith("open")


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
    # the whole play of the sender's and the recipient's hosts, where the mail is
    hosts = sorted({mail.sender.host, mail.recipient.host})
    proc = mail.info.cli("deploy", "--all", *(a for h in hosts for a in ("--host", h)), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert sorted(report["hosts"]) == hosts, report
    for name, host in report["hosts"].items():
        assert (host["status"], host["changed"], host["failed"]) == ("ok", 0, 0), (name, host)
    assert _inbox(mail, mail.recipient) == before
    again = fetch(mail.recipient.mailbox, token, mail.context(), timeout=5)
    assert again == mail.first.delivered
    # and mail still flows after it
    assert probe(mail.sender.mailbox, mail.recipient.mailbox, mail.roots, mail.dns()).ok
