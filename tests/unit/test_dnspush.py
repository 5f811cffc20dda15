"""coophost dns push: the per-record diff (what coophost owns), the update it sends, coop.yml's
dns.zones, and the DNSSEC chain `dns check --dnssec` validates (a tampered one must fail)."""

from __future__ import annotations

import time
from pathlib import Path

import dns.dnssec
import dns.message
import dns.name
import dns.opcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.tsig
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from coophost.dns.dnssec import ds_records, validate_chain
from coophost.dns.push import (
    Changes,
    build_update,
    diff,
    load_pushed,
    managed,
    record_key,
    save_pushed,
    tsig_key,
)
from coophost.dns.records import make_record
from coophost.dns.serve import dns_server_vars, primary, tsig_ref, zone_of
from coophost.errors import ValidationError
from coophost.registry.catalogue import load_catalogue
from coophost.registry.model import Host
from coophost.registry.parse import parse_coop

ZONE = "dune-press.test"


def current_of(*records):
    """A transferred zone's records as `transfer` returns them, with its SOA and NS."""
    found = {}
    for record in (make_record(f"{ZONE}.", "SOA", f"h2.lab.test. hostmaster.{ZONE}. 5 3600 900 "
                                                  "1209600 300"),
                   make_record(f"{ZONE}.", "NS", "h2.lab.test."), *records):
        found[record_key(record.name, record.type, record.rdata)] = (record.ttl, record.rdata)
    return found


MX = make_record(f"{ZONE}.", "MX", "10 h1.lab.test.")
SPF = make_record(f"{ZONE}.", "TXT", "v=spf1 mx -all")
DMARC = make_record(f"_dmarc.{ZONE}.", "TXT", "v=DMARC1; p=quarantine")
HAND_TXT = make_record(f"{ZONE}.", "TXT", "google-site-verification=abc")
HOST_A = make_record("h1.lab.test.", "A", "172.18.0.4")


def keys(*records):
    return {record_key(r.name, r.type, r.rdata) for r in records}


def test_an_empty_zone_gets_every_expected_record_of_the_zone_only() -> None:
    changes = diff(ZONE, [MX, SPF, DMARC, HOST_A], current_of(), set())
    assert keys(*[c for c in [MX, SPF, DMARC]]) == {c.key for c in changes.add}
    assert not changes.delete
    assert changes.owned == keys(MX, SPF, DMARC)  # h1.lab.test is outside the zone


def test_a_second_push_changes_nothing() -> None:
    changes = diff(ZONE, [MX, SPF, DMARC], current_of(MX, SPF, DMARC), keys(MX, SPF, DMARC))
    assert not changes
    assert changes.owned == keys(MX, SPF, DMARC)


def test_a_changed_value_deletes_only_the_old_record_coophost_pushed() -> None:
    new_mx = make_record(f"{ZONE}.", "MX", "10 h3.lab.test.")
    changes = diff(ZONE, [new_mx, SPF], current_of(MX, SPF, HAND_TXT), keys(MX, SPF))
    assert [c.key for c in changes.add] == [record_key(new_mx.name, "MX", new_mx.rdata)]
    assert [c.key for c in changes.delete] == [record_key(MX.name, "MX", MX.rdata)]


def test_hand_made_records_stay_even_in_an_rrset_coophost_writes() -> None:
    changes = diff(ZONE, [SPF], current_of(SPF, HAND_TXT, MX), keys(SPF))
    assert not changes  # the hand-made TXT and MX were never pushed by coophost


def test_a_record_no_longer_expected_is_removed_when_coophost_pushed_it() -> None:
    changes = diff(ZONE, [MX, SPF], current_of(MX, SPF, DMARC), keys(MX, SPF, DMARC))
    assert [c.key for c in changes.delete] == [record_key(DMARC.name, "TXT", DMARC.rdata)]
    assert not changes.add
    assert changes.owned == keys(MX, SPF)


def test_a_changed_ttl_is_deleted_and_added_again() -> None:
    longer = make_record(SPF.name, "TXT", "v=spf1 mx -all", ttl=7200)
    changes = diff(ZONE, [longer], current_of(SPF), keys(SPF))
    assert [(c.key, c.ttl) for c in changes.delete] == [(record_key(SPF.name, "TXT", SPF.rdata),
                                                         3600)]
    assert [c.ttl for c in changes.add] == [7200]


def test_protected_types_and_outside_names_are_never_touched() -> None:
    pushed = keys(make_record(f"{ZONE}.", "NS", "h2.lab.test."), HOST_A)
    changes = diff(ZONE, [make_record(f"{ZONE}.", "NS", "evil.example.")], current_of(HOST_A),
                   pushed)
    assert not changes
    for rtype in ("SOA", "NS", "DNSKEY", "RRSIG", "NSEC", "NSEC3", "CDS", "CDNSKEY"):
        assert not managed(f"{ZONE}.", rtype, ZONE)
    assert not managed("other-press.test.", "TXT", ZONE)
    assert not managed(f"x{ZONE}.", "TXT", ZONE)  # a suffix is not a subdomain
    assert managed(f"mail._domainkey.{ZONE}.", "TXT", ZONE)


def test_zone_of_picks_the_longest_served_zone() -> None:
    assert zone_of("a.b.example.org.", ["example.org", "b.example.org"]) == "b.example.org"
    assert zone_of("example.org", ["example.org"]) == "example.org"
    assert zone_of("badexample.org", ["example.org"]) is None


def test_the_update_deletes_then_adds_signed_with_the_key() -> None:
    new_mx = make_record(f"{ZONE}.", "MX", "10 h3.lab.test.")
    changes = diff(ZONE, [new_mx], current_of(MX), keys(MX))
    key = tsig_key("A" * 44)
    update = build_update(changes, key)
    assert update.opcode() == dns.opcode.UPDATE
    assert update.zone[0].name == dns.name.from_text(f"{ZONE}.")
    texts = [rrset.to_text() for rrset in update.update]
    assert texts == [f"{ZONE}. 0 NONE MX 10 h1.lab.test.", f"{ZONE}. 3600 IN MX 10 h3.lab.test."]
    wire = update.to_wire()
    parsed = dns.message.from_wire(wire, keyring={key.name: key})
    assert parsed.had_tsig
    with pytest.raises(dns.tsig.BadSignature):
        dns.message.from_wire(wire, keyring={key.name: tsig_key("B" * 44)})


def test_an_empty_changes_is_false() -> None:
    assert not Changes(ZONE)


def test_pushed_records_round_trip(tmp_path: Path) -> None:
    save_pushed(tmp_path, {ZONE: keys(MX, SPF)})
    assert load_pushed(tmp_path) == {ZONE: keys(MX, SPF)}


# ---- coop.yml dns.zones ---------------------------------------------------------------------

COOP = {"name": "C", "domain": "c.test", "contacts": ["a@c.test"],
        "acme": {"directory": "https://acme.c.test/dir"}, "vault": {"password_env": "V"}}


def test_dns_zones_are_parsed() -> None:
    coop = parse_coop({**COOP, "dns": {"zones": ["dune-press.test", "b.test"]}}, "coop.yml",
                      load_catalogue())
    assert coop.dns_zones == ("dune-press.test", "b.test")
    assert parse_coop(COOP, "coop.yml", load_catalogue()).dns_zones == ()


@pytest.mark.parametrize(("dns_value", "field"), [
    ({"zones": ["Not A Domain"]}, "dns.zones[0]"),
    ({"zones": ["a.test", "a.test"]}, "dns.zones[1]"),
    ({"zones": "a.test"}, "dns.zones"),
    ({"zone": ["a.test"]}, "dns"),
    (["a.test"], "dns"),
])
def test_bad_dns_zones_are_refused_naming_the_field(dns_value: object, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_coop({**COOP, "dns": dns_value}, "coop.yml", load_catalogue())
    assert "coop.yml" in str(caught.value) and field in str(caught.value)


def _host(name: str, groups: tuple[str, ...]) -> Host:
    return Host(name=name, fqdn=f"{name}.c.test", address="192.0.2.1", groups=groups,
                capacity={"ram_mb": 1, "disk_gb": 1})


def test_only_dns_hosts_get_the_server_vars_and_the_first_is_primary() -> None:
    coop = parse_coop({**COOP, "dns": {"zones": ["a.test"]}}, "coop.yml", load_catalogue())
    assert dns_server_vars(_host("h1", ("mail",)), coop) == {}
    served = dns_server_vars(_host("h2", ("mail", "dns")), coop)
    assert served["zones"] == ["a.test"] and served["tsig_secret"].service == "_dns_tsig"
    hosts = {n: _host(n, ("dns",)) for n in ("h3", "h2")} | {"h1": _host("h1", ())}
    found = primary(hosts)
    assert found is not None and found.name == "h2"


# ---- the DNSSEC chain -----------------------------------------------------------------------

ORIGIN = dns.name.from_text(f"{ZONE}.")


def _signed_zone():
    """A KSK and a ZSK, the DNSKEY RRset signed by the KSK, an MX RRset signed by the ZSK."""
    ksk_private = ec.generate_private_key(ec.SECP256R1())
    zsk_private = ec.generate_private_key(ec.SECP256R1())
    ksk = dns.dnssec.make_dnskey(ksk_private.public_key(), "ECDSAP256SHA256", flags=257)
    zsk = dns.dnssec.make_dnskey(zsk_private.public_key(), "ECDSAP256SHA256", flags=256)
    dnskey = dns.rrset.from_rdata(ORIGIN, 3600, ksk, zsk)
    dnskey_sigs = dns.rrset.from_rdata(ORIGIN, 3600, dns.dnssec.sign(
        dnskey, ksk_private, ORIGIN, ksk, lifetime=3600))
    mx = dns.rrset.from_rdata(ORIGIN, 3600, MX.rdata)
    mx_sigs = dns.rrset.from_rdata(ORIGIN, 3600, dns.dnssec.sign(
        mx, zsk_private, ORIGIN, zsk, lifetime=3600))
    return ksk, dnskey, dnskey_sigs, mx, mx_sigs


def test_a_valid_chain_validates() -> None:
    _ksk, dnskey, dnskey_sigs, mx, mx_sigs = _signed_zone()
    anchors = ds_records(ZONE, dnskey)
    assert len(anchors) == 1  # the KSK only
    findings = validate_chain(ZONE, dnskey, dnskey_sigs, anchors, [(mx, mx_sigs)])
    assert [(f.what, f.ok) for f in findings] == [("DNSKEY", True), (f"{ZONE}. MX", True)]


def test_a_tampered_rrset_fails_validation() -> None:
    _, dnskey, dnskey_sigs, _, mx_sigs = _signed_zone()
    forged = dns.rrset.from_rdata(ORIGIN, 3600, make_record(f"{ZONE}.", "MX",
                                                            "10 evil.example.").rdata)
    findings = validate_chain(ZONE, dnskey, dnskey_sigs, ds_records(ZONE, dnskey),
                              [(forged, mx_sigs)])
    assert findings[0].ok and not findings[1].ok and "bad signature" in findings[1].detail


def test_a_tampered_rrsig_fails_validation() -> None:
    _, dnskey, dnskey_sigs, mx, mx_sigs = _signed_zone()
    sig = next(iter(mx_sigs))
    broken = bytearray(sig.signature)
    broken[5] ^= 0xFF
    tampered = dns.rrset.from_rdata(ORIGIN, 3600, sig.replace(signature=bytes(broken)))
    findings = validate_chain(ZONE, dnskey, dnskey_sigs, ds_records(ZONE, dnskey),
                              [(mx, tampered)])
    assert not findings[1].ok


def test_a_dnskey_not_matching_the_recorded_ds_fails_and_nothing_is_trusted() -> None:
    _, dnskey, dnskey_sigs, mx, mx_sigs = _signed_zone()
    _other_ksk, other_dnskey, *_ = _signed_zone()
    findings = validate_chain(ZONE, dnskey, dnskey_sigs, ds_records(ZONE, other_dnskey),
                              [(mx, mx_sigs)])
    assert [f.ok for f in findings] == [False, False]
    assert "recorded DS" in findings[0].detail


def test_a_swapped_dnskey_rrset_signed_by_another_key_fails() -> None:
    _ksk, dnskey, _, mx, mx_sigs = _signed_zone()
    _, _, other_sigs, _, _ = _signed_zone()
    findings = validate_chain(ZONE, dnskey, other_sigs, ds_records(ZONE, dnskey),
                              [(mx, mx_sigs)])
    assert not findings[0].ok


def test_no_recorded_ds_or_expired_signatures_fail() -> None:
    _, dnskey, dnskey_sigs, mx, mx_sigs = _signed_zone()
    assert not validate_chain(ZONE, dnskey, dnskey_sigs, [], [(mx, mx_sigs)])[0].ok
    later = time.time() + 7200  # past the signatures' one-hour lifetime
    findings = validate_chain(ZONE, dnskey, dnskey_sigs, ds_records(ZONE, dnskey),
                              [(mx, mx_sigs)], now=later)
    assert not findings[0].ok
    assert not validate_chain(ZONE, dnskey, dnskey_sigs, ds_records(ZONE, dnskey),
                              [(mx, None)])[1].ok


# ---- rendering a dns host -------------------------------------------------------------------

def test_a_dns_host_gets_its_zones_port_53_and_the_secret_only_as_vault(coop: Path) -> None:
    import yaml

    from coophost.desired.hostvars import host_files
    from coophost.desired.units import compute

    hosts = coop / "hosts.yml"
    before = compute(coop).host_hashes
    hosts.write_text(hosts.read_text().replace("  children:\n", "  children:\n"
                                               "    dns:\n      hosts:\n        h2:\n", 1))
    after = compute(coop).host_hashes
    assert after["h2"] != before["h2"]
    texts, store = host_files(coop)
    loader = type("L", (yaml.SafeLoader,), {})
    loader.add_constructor("!unsafe", lambda ld, node: ld.construct_scalar(node))
    loader.add_constructor("!vault", lambda ld, node: ("vault", ld.construct_scalar(node)))
    h2 = yaml.load(texts["h2"], Loader=loader)
    h1 = yaml.load(texts["h1"], Loader=loader)
    server = h2["coophost_dns_server"]
    assert server["zones"] == ["dune-press.test"] and server["tsig_key_name"] == "coophost-update."
    assert server["tsig_secret"][0] == "vault"
    assert 53 in h2["coophost_host_ports"] and h2["coophost_host_udp_ports"] == [53]
    assert h1["coophost_dns_server"] == {} and h1["coophost_host_udp_ports"] == []
    secret = store.value(tsig_ref())
    assert len(secret) == 44 and secret not in texts["h2"]
    import base64

    assert len(base64.b64decode(secret)) == 33
