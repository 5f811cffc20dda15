"""The co-op's own authoritative DNS on a lab host: Knot on h2 (group dns) serves the lab's
coop.yml dns.zones (dune-press.test), DNSSEC-signed; `coophost dns push` sends the members'
records by TSIG-signed RFC 2136 updates, only what changed; `dns check --dnssec` validates
the chain against the DS `dns ds` records; a wrong TSIG key changes nothing.

Every test leaves the zone and the inventory as it found them (member file, secrets restored;
a record it added by hand deleted again)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.query
import dns.update
import pytest

from coophost.dns.push import primary_target, transfer, tsig_key, tsig_secret
from coophost.lab.lab import Lab
from coophost.registry.loader import load_registry
from tests.integration.conftest import LabInfo

pytestmark = pytest.mark.lab

ZONE = "dune-press.test"
MEMBER_FILE = Path("members") / "dune-press.yml"
NEW_DOMAIN = "news.dune-press.test"


def _zone(lab: LabInfo) -> dict[tuple[str, str, str], int]:
    """The served zone's records other than DNSSEC's own (which Knot re-signs at will)."""
    loaded = load_registry(lab.inventory)
    target = primary_target(loaded)
    key = tsig_key(tsig_secret(loaded))
    found = transfer(target.address, target.port, ZONE, {key.name: key})
    return {k: ttl for k, (ttl, _) in found.items()
            if k[1] not in ("RRSIG", "NSEC", "NSEC3", "SOA", "DNSKEY", "CDS", "CDNSKEY")}


def _push(lab: LabInfo, *args: str) -> dict[str, list[dict[str, object]]]:
    proc = lab.cli("dns", "push", "--json", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    return {z["zone"]: z for z in data["zones"]}


@pytest.fixture(scope="module")
def served(lab: LabInfo) -> Iterator[LabInfo]:
    """The lab deployed (Knot on h2 included) and its members' records pushed once."""
    deployed = lab.cli("deploy", "--json")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    _push(lab)
    yield lab


def test_push_sends_the_records_then_a_second_push_changes_nothing(served: LabInfo):
    expected = json.loads(served.cli("dns", "records", "--member", "dune-press", "--format",
                                     "json", check=True).stdout)
    in_zone = {(r["name"].lower(), r["type"]) for r in expected
               if r["name"].rstrip(".").endswith(ZONE)}
    assert {("dune-press.test.", "MX"), ("_dmarc.dune-press.test.", "TXT")} <= in_zone
    zone = _zone(served)
    assert in_zone <= {(name, rtype) for name, rtype, _ in zone}
    assert not any(name.startswith("h1.") for name, _, _ in zone)  # outside the zone

    again = _push(served)
    assert again[ZONE]["add"] == [] and again[ZONE]["delete"] == []
    assert _zone(served) == zone

    # the journal keeps the pushed records across a restart of Knot
    container = Lab(served.name, served.inventory).container("h2")
    subprocess.run(["docker", "exec", container, "systemctl", "restart", "knot"], check=True,
                   capture_output=True)
    assert _zone(served) == zone


def test_a_new_domain_is_pushed_alone_and_removed_with_it_hand_records_kept(served: LabInfo):
    before = _zone(served)
    loaded = load_registry(served.inventory)
    target = primary_target(loaded)
    key = tsig_key(tsig_secret(loaded))
    hand_value = '"added by hand"'

    def by_hand(add: bool) -> None:
        update = dns.update.Update(ZONE + ".", keyring=key)
        if add:  # the TTL of coophost's records: one RRset has one TTL
            update.add(ZONE + ".", 3600, "TXT", hand_value)
        else:
            update.delete(ZONE + ".", "TXT", hand_value)
        assert dns.query.tcp(update, target.address, port=target.port, timeout=10).rcode() == 0

    member = served.inventory / MEMBER_FILE
    original = member.read_bytes()
    by_hand(add=True)
    try:
        member.write_text(original.decode().replace(
            "  - dune-press.test\n", f"  - dune-press.test\n  - {NEW_DOMAIN}\n"))
        added = _push(served)[ZONE]
        assert added["delete"] == []
        names = {r["name"] for r in added["add"]}
        assert names and all(n.endswith(NEW_DOMAIN + ".") for n in names), names
        assert {(n, t) for n, t, _ in _zone(served)} >= {(f"{NEW_DOMAIN}.", "MX")}
        member.write_bytes(original)
        removed = _push(served)[ZONE]
        assert removed["add"] == []
        assert {r["name"] for r in removed["delete"]} == names
        assert (ZONE + ".", "TXT", hand_value) in _zone(served)  # not coophost's: kept
    finally:
        member.write_bytes(original)
        _push(served)
        by_hand(add=False)
    assert _zone(served) == before


def test_dns_check_validates_the_dnssec_chain_against_the_recorded_ds(served: LabInfo):
    ds = served.cli("dns", "ds", ZONE)
    assert ds.returncode == 0, ds.stdout + ds.stderr
    assert f"{ZONE}. 3600 IN DS " in ds.stdout and " 13 2 " in ds.stdout  # ECDSA P-256, SHA-256
    served.cli("lab", "dns", "sync", "--name", served.name, check=True)
    proc = served.cli("dns", "check", "--member", "dune-press", "--dnssec", "--json")
    data = json.loads(proc.stdout)
    assert proc.returncode == 0 and data["ok"], proc.stdout + proc.stderr
    assert data["dnssec"] and all(item["ok"] for item in data["dnssec"])
    assert {item["what"] for item in data["dnssec"]} >= {"DNSKEY", f"{ZONE}. MX"}

    # a DS the zone's key does not match: nothing validates, exit 1
    anchors = served.inventory / ".coophost" / "dns-anchors.json"
    recorded = anchors.read_bytes()
    try:
        digest = json.loads(recorded)["zones"][ZONE][0]
        wrong = digest[:-4] + ("0000" if not digest.endswith("0000") else "1111")
        anchors.write_text(json.dumps({"zones": {ZONE: [wrong]}}))
        proc = served.cli("dns", "check", "--member", "dune-press", "--dnssec", "--json")
        data = json.loads(proc.stdout)
        assert proc.returncode == 1 and not data["ok"]
        assert not any(item["ok"] for item in data["dnssec"])
    finally:
        anchors.write_bytes(recorded)


def test_a_wrong_tsig_key_is_refused_with_exit_2_and_the_zone_unchanged(served: LabInfo):
    from coophost.dns.serve import tsig_ref
    from coophost.secrets import SecretStore

    before = _zone(served)
    loaded = load_registry(served.inventory)
    secrets_file = served.inventory / "secrets" / "_coop.yml"
    member = served.inventory / MEMBER_FILE
    original_secrets, original_member = secrets_file.read_bytes(), member.read_bytes()
    try:
        store = SecretStore(loaded.root, loaded.registry.coop.vault, loaded.catalogue)
        store.replace(tsig_ref())  # a key the server never got
        store.save()
        # something the push would change, if the key were accepted
        member.write_text(original_member.decode().replace(
            "  - dune-press.test\n", f"  - dune-press.test\n  - {NEW_DOMAIN}\n"))
        proc = served.cli("dns", "push")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "refused the co-op's TSIG key" in proc.stderr
    finally:
        secrets_file.write_bytes(original_secrets)
        member.write_bytes(original_member)
    assert _zone(served) == before
