"""Knot serves both zones, DNSSEC-signed, with the TSIG key in a config only knot reads."""

import pytest


def test_knot_runs_and_listens_on_53(host):
    assert host.service("knot").is_running
    assert host.service("knot").is_enabled
    assert host.socket("tcp://0.0.0.0:53").is_listening
    assert host.socket("udp://0.0.0.0:53").is_listening


def test_the_config_is_valid_and_not_world_readable(host):
    conf = host.file("/etc/knot/knot.conf")
    assert conf.mode == 0o640 and conf.group == "knot"
    assert host.run("knotc -c /etc/knot/knot.conf conf-check").rc == 0
    assert "algorithm: hmac-sha256" in host.check_output("cat /etc/knot/knot.conf")


@pytest.mark.parametrize("zone", ["alpha.test", "beta.test"])
def test_each_zone_is_served_and_signed(host, zone):
    soa = host.check_output(f"knotc zone-read {zone} @ SOA")
    assert "ns1.mol.test." in soa
    keys = host.check_output(f"knotc zone-read {zone} @ DNSKEY")
    assert " 257 3 13 " in keys and " 256 3 13 " in keys  # KSK and ZSK, ECDSA P-256
    assert "RRSIG" in host.check_output(f"knotc zone-read {zone} @ RRSIG")
