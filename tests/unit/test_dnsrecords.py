"""`coophost dns records`: records built from the catalogue's templates, validated by dnspython."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest
import yaml

from coophost.dns.records import (
    format_zone,
    make_record,
    txt_strings,
    unit_records,
)
from coophost.errors import ConfigError, ValidationError
from coophost.registry import checks
from coophost.registry.catalogue import load_catalogue
from coophost.registry.model import Domain, Host, Member
from coophost.registry.parse import parse_hosts

REPO = Path(__file__).resolve().parents[2]
# services/mail/hooks.py, as the catalogue loaded it
MAIL_HOOKS = sys.modules[type(load_catalogue().services["mail"].hooks).__module__]
LONG = "p=" + "A" * 600


@pytest.mark.parametrize(("name", "rtype", "value", "line"), [
    ("a.test", "MX", "10 h1.lab.test.", "a.test. 60 IN MX 10 h1.lab.test."),
    ("a.test", "MX", "10 h1.lab.test", "a.test. 60 IN MX 10 h1.lab.test."),
    ("h1.lab.test", "A", "192.0.2.1", "h1.lab.test. 60 IN A 192.0.2.1"),
    ("h1.lab.test", "AAAA", "2001:db8::1", "h1.lab.test. 60 IN AAAA 2001:db8::1"),
    ("a.test", "TXT", "v=spf1 mx -all", 'a.test. 60 IN TXT "v=spf1 mx -all"'),
    ("a.test", "TXT", 'say "hi"; x\\y', 'a.test. 60 IN TXT "say \\"hi\\"; x\\\\y"'),
    ("xn--caf-dma.test", "TXT", "x", 'xn--caf-dma.test. 60 IN TXT "x"'),
])
def test_make_record(name: str, rtype: str, value: str, line: str) -> None:
    assert make_record(name, rtype, value, 60).zone_line() == line


@pytest.mark.parametrize(("length", "strings"), [(0, 1), (1, 1), (255, 1), (256, 2), (602, 3)])
def test_txt_split_at_255_bytes(length: int, strings: int) -> None:
    text = "x" * length
    chunks = txt_strings(text)
    assert len(chunks) == strings and all(len(c) <= 255 for c in chunks)
    assert b"".join(chunks).decode() == text
    record = make_record("a.test", "TXT", text)
    assert b"".join(record.rdata.strings).decode() == text


def test_txt_split_counts_bytes_not_characters() -> None:
    chunks = txt_strings("\u00e9" * 200)  # 400 bytes
    assert [len(c) for c in chunks] == [255, 145]


@pytest.mark.parametrize(("name", "rtype", "value"), [
    ("a.test", "MX", "10 h1.test.\nevil.test. 60 IN A 192.0.2.66"),
    ("a.test", "MX", "10 h1.test. extra"),
    ("a.test", "A", "192.0.2.1 192.0.2.2"),
    ("a.test", "A", "not-an-address"),
    ("a.test", "AAAA", "192.0.2.1"),
    ("a b.test", "A", "192.0.2.1"),
    ("a.test", "BOGUS", "x"),
])
def test_make_record_refuses_anything_but_one_record(name: str, rtype: str, value: str) -> None:
    with pytest.raises(ConfigError):
        make_record(name, rtype, value)


def test_a_hostile_txt_value_stays_one_record() -> None:
    text = '"\n@ 60 IN A 192.0.2.66\n; "'
    zone = format_zone([make_record("a.test", "TXT", text)])
    parsed = dns.zone.from_text(zone, origin=dns.name.root, relativize=False,
                                check_origin=False)
    rdatasets = [(n, r) for n, node in parsed.nodes.items() for r in node.rdatasets]
    assert len(rdatasets) == 1 and rdatasets[0][1].rdtype == dns.rdatatype.TXT
    assert b"".join(next(iter(rdatasets[0][1])).strings).decode() == text


def _member(domain: str) -> Member:
    return Member(slug="m", name="M", contact="a@b.test", status="active",
                  domains=(Domain(domain, domain),), ssh_keys=(),
                  services={"mail": {"domains": [domain], "mailboxes": ["a"]}}, placement={})


HOST = Host(name="h1", fqdn="h1.lab.test", address="127.0.0.1", groups=("mail",),
            capacity={}, dns_addresses=("192.0.2.1", "2001:db8::1"))
HOSTILE_DOMAINS = ["evil.test.\n@ 60 IN A 192.0.2.66", "a.test 60 IN A 192.0.2.66",
                   'a.test"', "a.test;x", "{{ x }}.test", "a..test\x00", " a.test"]


@pytest.mark.parametrize("domain", HOSTILE_DOMAINS)
def test_hostile_member_domain_is_refused_twice(domain: str) -> None:
    """The registry refuses it (IDNA allowlist); and a record never carries it if it slipped."""
    with pytest.raises(ValidationError):
        checks.domain(domain, "members/m.yml", "domains[0]")
    with pytest.raises(ConfigError):
        unit_records(_member(domain), load_catalogue().services["mail"], HOST, lambda name: None)


def test_unit_records_of_mail() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    found = unit_records(_member("a.test"), load_catalogue().services["mail"], HOST,
                         lambda name: pem if name == "dkim_key" else None)
    assert found.notes == []
    got = {(r.name, r.type) for r in found.records}
    assert got == {("a.test.", "MX"), ("h1.lab.test.", "A"), ("h1.lab.test.", "AAAA"),
                   ("a.test.", "TXT"), ("coophost._domainkey.a.test.", "TXT"),
                   ("_dmarc.a.test.", "TXT")}
    dkim = next(r for r in found.records if r.name.startswith("coophost._domainkey"))
    text = b"".join(dkim.rdata.strings).decode()
    assert text == f"v=DKIM1; k=rsa; p={MAIL_HOOKS.dkim_public_key(pem)}"
    assert len(dkim.rdata.strings) == 2
    public = serialization.load_der_public_key(
        __import__("base64").b64decode(text.split("p=", 1)[1]))
    assert public.public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


def test_dkim_selector_matches_the_mail_role() -> None:
    defaults = yaml.safe_load((REPO / "services/mail/defaults/main.yml").read_text())
    assert defaults["mail_dkim_selector"] == MAIL_HOOKS.DKIM_SELECTOR


@pytest.mark.parametrize(("host_vars", "addresses"), [
    ({"ansible_host": "127.0.0.1", "coophost_lab_ip": "172.30.0.11"}, ("172.30.0.11",)),
    ({"ansible_host": "192.0.2.7"}, ("192.0.2.7",)),
    ({"ansible_host": "2001:db8::7"}, ("2001:db8::7",)),
    ({"ansible_host": "127.0.0.1"}, ()),
    ({"ansible_host": "fe80::1"}, ()),
    ({"ansible_host": "h1.example.org"}, ()),
    ({}, ()),
])
def test_host_dns_addresses(host_vars: dict[str, str], addresses: tuple[str, ...]) -> None:
    hosts = parse_hosts({"all": {"hosts": {"h1": host_vars}}}, "hosts.yml", load_catalogue())
    assert hosts["h1"].dns_addresses == addresses


def test_host_lab_ip_must_be_an_address() -> None:
    with pytest.raises(ValidationError, match="IP address"):
        parse_hosts({"all": {"hosts": {"h1": {"coophost_lab_ip": "x; evil"}}}}, "hosts.yml",
                    load_catalogue())


def _with_addresses(coop: Path) -> None:
    hosts = coop / "hosts.yml"
    text = hosts.read_text()
    for number in (1, 2, 3):
        text = text.replace(f"ansible_port: 4000{number},",
                            f"ansible_port: 4000{number}, coophost_lab_ip: 172.30.0.1{number},")
    hosts.write_text(text)


def test_cli_records_before_and_after_render(coop: Path, cli) -> None:
    _with_addresses(coop)
    code, out, err = cli("-i", str(coop), "dns", "records", "--member", "dune-press")
    assert code == 0, err
    assert "no DKIM key yet" in err and "_domainkey" not in out
    assert cli("-i", str(coop), "render")[0] == 0
    code, zone, err = cli("-i", str(coop), "dns", "records", "--member", "dune-press")
    assert code == 0 and [line for line in err.splitlines()
                          if not line.startswith("next:")] == []  # no note left
    parsed = dns.zone.from_text(zone, origin=dns.name.root, relativize=False,
                                check_origin=False)
    found = {(name.to_text(), dns.rdatatype.to_text(rds.rdtype))
             for name, node in parsed.nodes.items() for rds in node.rdatasets}
    host = next(n for n, t in found if t == "A")
    assert found == {("dune-press.test.", "MX"), ("dune-press.test.", "TXT"),
                     (host, "A"), ("coophost._domainkey.dune-press.test.", "TXT"),
                     ("_dmarc.dune-press.test.", "TXT")}
    assert all(line.split()[0].endswith(".") for line in zone.splitlines())
    code, text, _ = cli("-i", str(coop), "dns", "records", "--member", "dune-press",
                        "--format", "json")
    records = json.loads(text)
    assert [sorted(r) for r in records] == [["name", "ttl", "type", "value"]] * len(records)
    assert {(r["name"], r["type"]) for r in records} == found
    for record in records:  # each value reads back as the same rdata
        again = make_record(record["name"], record["type"], record["value"])
        if record["type"] != "TXT":  # TXT values are presentation text: quoted strings
            assert again.value == record["value"]
        assert dns.rdata.from_text(dns.rdataclass.IN, record["type"], record["value"]).to_text(
            ) == record["value"]
    code, everything, _ = cli("-i", str(coop), "dns", "records")
    assert code == 0
    for domain in ("ada-books", "bread-coop", "cycle-works", "dune-press"):
        assert f"coophost._domainkey.{domain}.test." in everything
    assert "cloud.bread-coop.test. 3600 IN A " in everything  # bread-coop's Nextcloud
    assert "PRIVATE KEY" not in everything + zone + text
    assert "mta-sts" not in everything.lower() and "_smtp._tls" not in everything


@pytest.mark.parametrize("args", [["--member", "nobody"], ["--member", "../x"],
                                  ["--format", "bind"]])
def test_cli_refuses_bad_arguments(coop: Path, cli, args: list[str]) -> None:
    assert cli("-i", str(coop), "dns", "records", *args)[0] == 2
