"""DNSSEC of the zones the co-op serves: their DS records, and the chain `dns check` validates.

The chain of a served zone, checked by `validate_chain` (pure, dnspython's dns.dnssec):

1. the trust anchor: the DS records the co-op gave its registrar. `coophost dns ds ZONE`
   computes them from the zone's key-signing keys (DNSKEY flags 257, SHA-256 digest) and
   records them in .coophost/dns-anchors.json; later checks verify against that record, so a
   new or swapped KSK no longer matches until the sysadmin records (and publishes) its DS
   again. In the lab there is no parent zone: the recorded DS is the anchor.
2. the DNSKEY RRset: one of its keys matches an anchor, and that key's RRSIG over the DNSKEY
   RRset validates;
3. every answered RRset: its RRSIG validates with the (validated) DNSKEY RRset.

Queries go to the primary dns host over TCP with the DO bit (the answers must carry RRSIGs).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coophost.errors import ConfigError, HostUnreachable
from coophost.fsutil import atomic_write
from coophost.layout import STATE_DIR

ANCHORS_FILE = "dns-anchors.json"  # under .coophost/
KSK_FLAGS = 257
DIGEST = "SHA256"
TIMEOUT = 10.0


@dataclass(frozen=True)
class ChainFinding:
    """One step of a zone's chain: what was validated, ok or not, and why not."""

    zone: str
    what: str  # "DNSKEY" or "<name> <type>"
    ok: bool
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        """{zone, what, ok, detail}."""
        return {"zone": self.zone, "what": self.what, "ok": self.ok, "detail": self.detail}


def ds_records(zone: str, dnskeys: Iterable[Any]) -> list[Any]:
    """The DS records (SHA-256) of the zone's key-signing keys (DNSKEY flags 257)."""
    import dns.dnssec

    return [dns.dnssec.make_ds(zone + ".", key, DIGEST) for key in dnskeys
            if key.flags == KSK_FLAGS]


def validate_chain(zone: str, dnskey: Any, dnskey_sigs: Any, anchors: Iterable[Any],
                   answers: Iterable[tuple[Any, Any]], now: float | None = None
                   ) -> list[ChainFinding]:
    """Validate `zone`'s DNSKEY RRset against `anchors` (DS rdata), then each answer. Pure.

    `dnskey`/`dnskey_sigs`: the zone's DNSKEY RRset and its RRSIG RRset (None when absent);
    `answers`: (RRset, its RRSIG RRset or None) pairs. Nothing is trusted past a failed step:
    when the DNSKEY RRset fails, every answer fails with it.
    """
    import dns.dnssec
    import dns.name

    origin = dns.name.from_text(zone + ".")
    findings: list[ChainFinding] = []
    trusted = None
    anchor_list = list(anchors)
    if dnskey is None or dnskey_sigs is None:
        findings.append(ChainFinding(zone, "DNSKEY", False, "no signed DNSKEY RRset answered"))
    elif not anchor_list:
        findings.append(ChainFinding(zone, "DNSKEY", False,
                                     "no DS recorded (run `coophost dns ds " + zone + "`)"))
    else:
        matching = [key for key in dnskey for ds in anchor_list
                    if key.flags == KSK_FLAGS and key.algorithm == ds.algorithm
                    and dns.dnssec.key_id(key) == ds.key_tag
                    and dns.dnssec.make_ds(origin, key, ds.digest_type) == ds]
        if not matching:
            findings.append(ChainFinding(zone, "DNSKEY", False,
                                         "no key-signing key matches the recorded DS"))
        else:
            import dns.node
            import dns.rdataset

            anchored = dns.rdataset.from_rdata_list(dnskey.ttl, matching)
            try:
                dns.dnssec.validate(dnskey, dnskey_sigs, {origin: anchored}, now=now)
            except dns.dnssec.ValidationFailure as exc:
                findings.append(ChainFinding(zone, "DNSKEY", False,
                                             f"the DS's key does not sign the DNSKEY RRset: "
                                             f"{exc}"))
            else:
                trusted = dnskey
                findings.append(ChainFinding(zone, "DNSKEY", True))
    for rrset, sigs in answers:
        import dns.rdatatype

        what = f"{rrset.name.to_text()} {dns.rdatatype.to_text(rrset.rdtype)}"
        if trusted is None:
            findings.append(ChainFinding(zone, what, False, "the zone's DNSKEY is not trusted"))
        elif sigs is None:
            findings.append(ChainFinding(zone, what, False, "no RRSIG answered"))
        else:
            try:
                dns.dnssec.validate(rrset, sigs, {origin: trusted}, now=now)
            except dns.dnssec.ValidationFailure as exc:
                findings.append(ChainFinding(zone, what, False, f"bad signature: {exc}"))
            else:
                findings.append(ChainFinding(zone, what, True))
    return findings


# ---- asking the primary ---------------------------------------------------------------------

def ask(address: str, port: int, name: str, rtype: str) -> tuple[Any, Any]:
    """(RRset, its RRSIG RRset) the server answers for (name, type) over TCP; None if absent."""
    import dns.exception
    import dns.flags
    import dns.message
    import dns.query
    import dns.rdatatype

    query = dns.message.make_query(name, rtype, want_dnssec=True)
    query.flags &= ~dns.flags.RD
    try:
        response = dns.query.tcp(query, address, port=port, timeout=TIMEOUT)
    except (OSError, dns.exception.Timeout, EOFError) as exc:
        raise HostUnreachable(f"dns: cannot reach {address}:{port} over TCP: {exc}") from None
    kind = dns.rdatatype.from_text(rtype)
    rrset = sigs = None
    for found in response.answer:
        if found.rdtype == kind:
            rrset = found
        elif found.rdtype == dns.rdatatype.RRSIG and found.covers == kind:
            sigs = found
    return rrset, sigs


# ---- recorded anchors -----------------------------------------------------------------------

def anchors_path(root: Path) -> Path:
    """.coophost/dns-anchors.json: per zone, the DS records given to its parent."""
    return root / STATE_DIR / ANCHORS_FILE


def load_anchors(root: Path) -> dict[str, list[Any]]:
    """The recorded DS records per zone, as dnspython rdata."""
    import dns.exception
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype

    path = anchors_path(root)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(zone): [dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DS, text)
                            for text in rows] for zone, rows in data["zones"].items()}
    except (ValueError, KeyError, TypeError, AttributeError, dns.exception.DNSException) as exc:
        raise ConfigError(f"{path}: not what `coophost dns ds` writes ({exc})",
                          hint="run `coophost dns ds ZONE` to record the zone's DS again"
                          ) from None


def save_anchors(root: Path, anchors: Mapping[str, list[Any]]) -> None:
    """Write the DS records per zone (atomically)."""
    data = {"zones": {zone: sorted(ds.to_text() for ds in rows)
                      for zone, rows in sorted(anchors.items())}}
    atomic_write(anchors_path(root), json.dumps(data, indent=1) + "\n")
