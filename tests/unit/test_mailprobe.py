"""The mail probe's pure parts: which hop used TLS, DKIM verification, picking mailboxes."""

from __future__ import annotations

import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from coophost.errors import UsageError
from coophost.lab.mailcheck import LabMailbox, pick_pair
from coophost.lab.mailprobe import Mailbox, received_tls, verify_dkim
from coophost.registry.catalogue import load_catalogue

# services/mail/hooks.py, as the catalogue loaded it
dkim_public_key = sys.modules[
    type(load_catalogue().services["mail"].hooks).__module__].dkim_public_key

HEADERS = (
    b"Received: from h3.lab.test\r\n\tby h3.lab.test with LMTP\r\n\tid x; Sun, 29 Nov 2026\r\n"
    b"Received: from h2.lab.test (h2 [172.19.0.5])\r\n"
    b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"
    b"\tby h3.lab.test (Postfix) with ESMTPS id 1\r\n"
    b"Received: from probe.coophost.invalid (unknown [172.19.0.1])\r\n"
    b"\tby h2.lab.test (Postfix) with ESMTPSA id 2\r\n"
    b"Subject: hi\r\n\r\nbody\r\n")


def test_received_tls_reads_the_hop_between_the_two_hosts():
    assert received_tls(HEADERS, "h2.lab.test", "h3.lab.test") == "TLSv1.3 TLS_AES_256_GCM_SHA384"


def test_received_tls_none_when_the_hop_recorded_no_tls_or_is_missing():
    assert received_tls(HEADERS, "probe.coophost.invalid", "h2.lab.test") is None
    assert received_tls(HEADERS, "h1.lab.test", "h3.lab.test") is None
    # the LMTP hop on h3 names h3 as both ends: it is not the hop between hosts
    assert received_tls(HEADERS, "h3.lab.test", "h3.lab.test") is None


def _signed(key_pem: bytes, domain: str = "ada.test") -> bytes:
    import dkim

    message = (b"From: ada@ada.test\r\nTo: bo@bread.test\r\nSubject: t\r\n"
               b"Message-ID: <1@ada.test>\r\n\r\nhello\r\n")
    signature = dkim.sign(message, b"coophost", domain.encode(), key_pem,
                          include_headers=[b"from", b"to", b"subject"])
    return signature + message


def _key() -> bytes:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return private.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())


def test_dkim_verifies_against_the_published_key_only():
    key, other = _key(), _key()
    raw = _signed(key)

    def published(pem: bytes):
        record = f"v=DKIM1; k=rsa; p={dkim_public_key(pem.decode())}".encode()
        return lambda name: record if name == b"coophost._domainkey.ada.test." else None

    assert verify_dkim(raw, published(key)) == (True, "ada.test")
    assert verify_dkim(raw, published(other))[0] is False
    assert verify_dkim(raw.replace(b"hello", b"hellO"), published(key))[0] is False
    assert verify_dkim(raw, lambda name: None)[0] is False


def test_unsigned_message_does_not_verify():
    assert verify_dkim(b"From: a@b.test\r\n\r\nx\r\n", lambda name: None) == (False, "")


def _box(member: str, host: str, address: str) -> LabMailbox:
    return LabMailbox(member, host, Mailbox(address, "pw", f"{host}.lab.test", "172.19.0.9"))


BOXES = {b.mailbox.address: b for b in [
    _box("ada", "h2", "ada@ada.test"), _box("ada", "h2", "orders@ada.test"),
    _box("cyc", "h2", "cy@cyc.test"), _box("bread", "h3", "bakers@bread.test")]}


def test_pick_pair_defaults_to_another_member_on_another_host():
    first, second = pick_pair(BOXES)
    assert (first.mailbox.address, second.mailbox.address) == ("ada@ada.test",
                                                               "bakers@bread.test")


def test_pick_pair_named_and_unknown():
    first, second = pick_pair(BOXES, "cy@cyc.test", "ada@ada.test")
    assert (first.member, second.member) == ("cyc", "ada")
    with pytest.raises(UsageError, match=r"--to 'nobody@x\.test'"):
        pick_pair(BOXES, None, "nobody@x.test")


def test_pick_pair_needs_two_hosts():
    one_host = {k: v for k, v in BOXES.items() if v.host == "h2"}
    with pytest.raises(UsageError, match="members on two hosts"):
        pick_pair(one_host)
    with pytest.raises(UsageError, match="deploy"):
        pick_pair({})
