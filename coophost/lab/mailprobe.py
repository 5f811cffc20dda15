"""Prove mail end to end between members: submit, deliver across hosts, read back, verify.

A probe submits a message as one member's mailbox (SMTP submission, STARTTLS on 587, with
authentication) to the host that member lives on, waits for it in another member's mailbox
over IMAPS on that member's host, and checks what arrived: the DKIM signature verifies
against the key DNS publishes (dkimpy), and the receiving host's Received header records the
TLS the two hosts spoke. Hosts are reached at an address given by the caller (the lab
network's) while TLS verifies their names against a given CA bundle; nothing is sent anywhere
else. Every step is reported as a Check, and none is skipped silently.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import re
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

TIMEOUT = 20.0
RECEIVED_TLS_RE = re.compile(r"\(using (TLSv1\.[0-9]) with cipher ([A-Z0-9_-]+)")


@dataclass(frozen=True)
class Mailbox:
    """A mailbox a probe may use: its login, password, and the host serving it."""

    address: str
    password: str
    host_fqdn: str
    host_address: str  # where to connect (the lab network address)


@dataclass
class Check:
    """One thing the probe verified, whether it held, and what it saw."""

    name: str
    ok: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        """The check as {name, ok, detail}."""
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class ProbeResult:
    """Every check of one probe, in order, and the message as delivered (bytes)."""

    checks: list[Check] = field(default_factory=list)
    delivered: bytes = b""

    @property
    def ok(self) -> bool:
        """Whether every check held (and there was at least one)."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        """Record a check; return whether it held."""
        self.checks.append(Check(name, ok, detail))
        return ok


def tls_context(cadata: str) -> ssl.SSLContext:
    """A client context trusting only `cadata` (PEM), TLS 1.2 or newer, names checked."""
    context = ssl.create_default_context(cadata=cadata)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class SMTPAt(smtplib.SMTP):
    """SMTP to a host by name (TLS checks that name) over a connection to a given address."""

    def __init__(self, fqdn: str, address: str, port: int, timeout: float = TIMEOUT) -> None:
        self._address = address
        super().__init__(fqdn, port, local_hostname="probe.coophost.invalid", timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._address, port), timeout)


class SMTPSAt(smtplib.SMTP_SSL):
    """SMTP over TLS from the first byte (port 465), by name, to a given address."""

    def __init__(self, fqdn: str, address: str, port: int, context: ssl.SSLContext,
                 timeout: float = TIMEOUT) -> None:
        self._address = address
        super().__init__(fqdn, port, local_hostname="probe.coophost.invalid", timeout=timeout,
                         context=context)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        raw = socket.create_connection((self._address, port), timeout)
        return self.context.wrap_socket(raw, server_hostname=host)


class IMAPAt(imaplib.IMAP4_SSL):
    """IMAPS (993) to a host by name (TLS checks that name) over a given address."""

    def __init__(self, fqdn: str, address: str, context: ssl.SSLContext, port: int = 993,
                 timeout: float = TIMEOUT) -> None:
        self._address = address
        super().__init__(fqdn, port, ssl_context=context, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        raw = socket.create_connection((self._address, self.port), timeout)
        return self.ssl_context.wrap_socket(raw, server_hostname=self.host)


def submit(sender: Mailbox, recipient: str, subject: str, body: str,
           context: ssl.SSLContext, port: int = 587) -> str:
    """Send one message as `sender` through its host's submission port; return its Message-ID.

    STARTTLS is required before authenticating (smtplib raises otherwise).
    """
    message = EmailMessage()
    message["From"] = sender.address
    message["To"] = recipient
    message["Subject"] = subject
    message["Message-ID"] = f"<{uuid.uuid4().hex}@{sender.address.split('@')[1]}>"
    message.set_content(body)
    if port == 465:
        with SMTPSAt(sender.host_fqdn, sender.host_address, port, context) as smtp:
            smtp.login(sender.address, sender.password)
            smtp.send_message(message)
    else:
        with SMTPAt(sender.host_fqdn, sender.host_address, port) as smtp:
            smtp.starttls(context=context)
            smtp.login(sender.address, sender.password)
            smtp.send_message(message)
    return str(message["Message-ID"])


def fetch(mailbox: Mailbox, subject_token: str, context: ssl.SSLContext,
          timeout: float = 90.0, folder: str = "INBOX") -> bytes | None:
    """Wait for a message whose Subject holds `subject_token`; return it raw, or None."""
    deadline = time.monotonic() + timeout
    with IMAPAt(mailbox.host_fqdn, mailbox.host_address, context) as imap:
        imap.login(mailbox.address, mailbox.password)
        while True:
            imap.select(folder, readonly=True)
            _, data = imap.search(None, "HEADER", "Subject", subject_token)
            numbers = data[0].split() if data and data[0] else []
            if numbers:
                _, parts = imap.fetch(numbers[-1], "(BODY.PEEK[])")
                for part in parts:
                    if isinstance(part, tuple):
                        return bytes(part[1])
            if time.monotonic() > deadline:
                return None
            time.sleep(1.0)


def received_tls(raw: bytes, from_fqdn: str, by_fqdn: str) -> str | None:
    """The TLS version and cipher of the hop `from_fqdn` -> `by_fqdn`, from its Received header.

    Postfix records it as `(using TLSv1.3 with cipher ...)` when `smtpd_tls_received_header`
    is on; None when that hop's header is missing or records no TLS.
    """
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    for header in message.get_all("Received") or []:
        text = " ".join(str(header).split())
        if text.startswith(f"from {from_fqdn} ") and f" by {by_fqdn} " in text:
            found = RECEIVED_TLS_RE.search(text)
            return f"{found.group(1)} {found.group(2)}" if found else None
    return None


DnsTxt = Callable[[bytes], bytes | None]


def verify_dkim(raw: bytes, dnsfunc: DnsTxt) -> tuple[bool, str]:
    """Verify the message's DKIM-Signature with keys from `dnsfunc`; (ok, signing domain)."""
    import dkim

    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    signature = message.get("DKIM-Signature")
    if signature is None:
        return False, ""
    tags = dict(part.strip().split("=", 1) for part in str(signature).split(";") if "=" in part)
    domain = "".join(tags.get("d", "").split())
    ok = bool(dkim.verify(raw, dnsfunc=lambda name, timeout=5: dnsfunc(name)))
    return ok, domain


def dns_txt(nameserver: str, port: int) -> DnsTxt:
    """A TXT lookup for dkimpy against one resolver: the record's strings joined."""
    import dns.exception
    import dns.resolver

    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [nameserver]
    res.port = port
    res.lifetime = 5.0

    def lookup(name: bytes) -> bytes | None:
        try:
            answer = res.resolve(name.decode().rstrip("."), "TXT", search=False)
        except dns.exception.DNSException:
            return None
        return b"".join(answer[0].strings) if answer else None

    return lookup


def probe(sender: Mailbox, recipient: Mailbox, cadata: str, dnsfunc: DnsTxt,
          timeout: float = 90.0) -> ProbeResult:
    """Send from `sender` to `recipient` and verify delivery, DKIM and TLS between hosts."""
    result = ProbeResult()
    context = tls_context(cadata)
    token = f"coophost-probe-{uuid.uuid4().hex[:12]}"
    try:
        submit(sender, recipient.address, f"{token} from {sender.address}",
               "A message coophost sent to prove mail between members.\n", context)
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        result.add("submission", False, f"{sender.address} via {sender.host_fqdn}:587: {exc}")
        return result
    result.add("submission", True, f"{sender.address} authenticated on {sender.host_fqdn}:587 "
               "after STARTTLS (certificate verified against the lab ACME CA)")
    try:
        raw = fetch(recipient, token, context, timeout)
    except (OSError, imaplib.IMAP4.error, ssl.SSLError) as exc:
        result.add("delivery", False, f"{recipient.address} on {recipient.host_fqdn}:993: {exc}")
        return result
    if raw is None:
        result.add("delivery", False, f"no message {token} in {recipient.address}'s INBOX "
                   f"on {recipient.host_fqdn} after {timeout:.0f} s")
        return result
    result.delivered = raw
    result.add("delivery", True, f"{recipient.address} read it over IMAPS on "
               f"{recipient.host_fqdn}:993 ({len(raw)} bytes)")
    ok, domain = verify_dkim(raw, dnsfunc)
    sender_domain = sender.address.split("@")[1]
    result.add("dkim", ok and domain == sender_domain,
               f"DKIM-Signature d={domain or '(none)'} "
               f"{'verifies' if ok else 'does NOT verify'} against the key published in DNS")
    tls = received_tls(raw, sender.host_fqdn, recipient.host_fqdn)
    if sender.host_fqdn == recipient.host_fqdn:
        result.add("tls between hosts", False, "sender and recipient share a host")
    else:
        result.add("tls between hosts", tls is not None,
                   f"{sender.host_fqdn} -> {recipient.host_fqdn} over {tls}" if tls else
                   f"{recipient.host_fqdn}'s Received header records no TLS")
    return result
