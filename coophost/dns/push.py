"""`coophost dns push`: the members' records of the zones the co-op serves, sent to its DNS.

The zone is read from the primary dns host by AXFR and changed by one RFC 2136 update per
zone, both signed with the co-op's TSIG key, over TCP. `diff` (pure) decides what changes.

What coophost owns, record by record (name, type, value), never RRset by RRset:

- every record `coophost dns records` computes now for a name inside the zone is coophost's:
  it is added when the zone lacks it;
- a record coophost pushed before (kept per zone in .coophost/dns-pushed.json, written after
  each update the server accepted) and no longer computes is deleted, that record alone;
- anything else is the sysadmin's and is never touched, even in an RRset coophost also
  writes to (a hand-made TXT beside the SPF record stays). Lost bookkeeping (a fresh clone of
  the co-op) only means stale records are left in place, never that a hand-made one goes.

Never touched whatever the bookkeeping says: SOA, NS, DNSSEC records (DNSKEY, RRSIG, NSEC,
NSEC3, NSEC3PARAM, CDS, CDNSKEY, DS; Knot signs each change itself), and names outside the
zone. A record whose TTL changed is deleted and added again with its new TTL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coophost.dns.records import Record
from coophost.dns.serve import zone_of
from coophost.errors import ConfigError, ExternalCommandError, HostUnreachable, UsageError
from coophost.fsutil import atomic_write
from coophost.layout import STATE_DIR

PUSHED_FILE = "dns-pushed.json"  # under .coophost/
PROTECTED = frozenset({"SOA", "NS", "DNSKEY", "RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "CDS",
                       "CDNSKEY", "DS", "TSIG", "TKEY"})
TIMEOUT = 10.0

Key = tuple[str, str, str]  # (absolute lower-case name, type, value in presentation format)


@dataclass(frozen=True)
class Change:
    """One record to add or delete: its key, TTL and rdata (dnspython)."""

    key: Key
    ttl: int
    rdata: Any

    def as_json(self) -> dict[str, Any]:
        """{name, type, ttl, value}."""
        name, rtype, value = self.key
        return {"name": name, "type": rtype, "ttl": self.ttl, "value": value}


@dataclass
class Changes:
    """What one zone needs: records to delete, records to add, and what coophost then owns."""

    zone: str
    delete: list[Change] = field(default_factory=list)
    add: list[Change] = field(default_factory=list)
    owned: set[Key] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.delete or self.add)


def record_key(name: str, rtype: str, rdata: Any) -> Key:
    """A record's identity: its absolute lower-case name, type and rdata text (names absolute)."""
    import dns.name

    owner = name if name.endswith(".") else name + "."
    return owner.lower(), rtype.upper(), str(rdata.to_text(origin=dns.name.root,
                                                           relativize=False))


def managed(name: str, rtype: str, zone: str) -> bool:
    """Whether coophost may ever write (name, type) in `zone`: inside it and not protected."""
    return rtype.upper() not in PROTECTED and zone_of(name, [zone]) == zone


def diff(zone: str, expected: Iterable[Record], current: Mapping[Key, tuple[int, Any]],
         pushed: Iterable[Key]) -> Changes:
    """What to send so `zone` holds the expected records (see the module docstring). Pure.

    `expected`: every record computed (those outside the zone or of a protected type are left
    out here); `current`: the zone's records, key -> (ttl, rdata), as transferred; `pushed`:
    the keys coophost pushed to this zone before.
    """
    changes = Changes(zone)
    wanted: dict[Key, Record] = {}
    for record in expected:
        if managed(record.name, record.type, zone):
            wanted.setdefault(record_key(record.name, record.type, record.rdata), record)
    for key, record in sorted(wanted.items()):
        have = current.get(key)
        if have is None:
            changes.add.append(Change(key, record.ttl, record.rdata))
        elif have[0] != record.ttl:
            changes.delete.append(Change(key, have[0], have[1]))
            changes.add.append(Change(key, record.ttl, record.rdata))
    for key in sorted(set(pushed) - set(wanted)):
        if key in current and managed(key[0], key[1], zone):
            changes.delete.append(Change(key, current[key][0], current[key][1]))
    changes.owned = set(wanted)
    return changes


def build_update(changes: Changes, keyring: Any) -> Any:
    """One RFC 2136 update message (dns.update.Update) making `changes`, signed with `keyring`.

    Deletions come first, then additions (a TTL change is a delete and an add of one record).
    """
    import dns.update

    update = dns.update.Update(changes.zone + ".", keyring=keyring)
    for change in changes.delete:
        update.delete(change.key[0], change.rdata)
    for change in changes.add:
        update.add(change.key[0], change.ttl, change.rdata)
    return update


# ---- talking to the primary -----------------------------------------------------------------

def tsig_key(secret: str) -> Any:
    """The co-op's TSIG key for dnspython (hmac-sha256)."""
    import dns.tsig

    from coophost.dns.serve import TSIG_KEY_NAME

    return dns.tsig.Key(TSIG_KEY_NAME, secret, algorithm=dns.tsig.HMAC_SHA256)


def _refused(what: str, where: str, detail: str) -> UsageError:
    return UsageError(f"dns: {where} refused the co-op's TSIG key for {what} ({detail}); "
                      "nothing was changed",
                      hint="the key in secrets/_coop.yml (_dns_tsig) must be the one deployed "
                           "to the dns hosts: run `coophost deploy`")


def _unreachable(where: str, exc: Exception) -> HostUnreachable:
    return HostUnreachable(f"dns: cannot reach {where} over TCP: {exc}",
                           hint="check coophost_dns_address in hosts.yml and the host's port 53")


def transfer(address: str, port: int, zone: str, keyring: Any) -> dict[Key, tuple[int, Any]]:
    """Every record of `zone` on the server, by AXFR signed with `keyring`: key -> (ttl, rdata).

    A refused key (NOTAUTH, a bad TSIG) raises UsageError (exit 2); a server that does not
    serve the zone raises ConfigError.
    """
    import dns.exception
    import dns.query
    import dns.rcode
    import dns.rdatatype
    import dns.tsig
    import dns.xfr

    where = f"{address}:{port}"
    found: dict[Key, tuple[int, Any]] = {}
    try:
        for message in dns.query.xfr(address, zone + ".", port=port, keyring=keyring,
                                     relativize=False, lifetime=TIMEOUT, timeout=TIMEOUT):
            for rrset in message.answer:
                rtype = dns.rdatatype.to_text(rrset.rdtype)
                for rdata in rrset:
                    found[record_key(rrset.name.to_text(), rtype, rdata)] = (rrset.ttl, rdata)
    except (dns.tsig.PeerError, dns.tsig.BadSignature) as exc:
        raise _refused(f"the transfer of {zone}", where, type(exc).__name__) from None
    except dns.xfr.TransferError as exc:
        if exc.rcode in (dns.rcode.NOTAUTH, dns.rcode.REFUSED) and not found:
            raise _refused(f"the transfer of {zone}", where,
                           dns.rcode.to_text(exc.rcode)) from None
        raise ConfigError(f"dns: {where} does not transfer zone {zone}: "
                          f"{dns.rcode.to_text(exc.rcode)}",
                          hint="is the zone in coop.yml's dns.zones and deployed?") from None
    except (OSError, dns.exception.Timeout, EOFError) as exc:
        raise _unreachable(where, exc) from None
    except dns.exception.FormError as exc:
        raise ExternalCommandError(f"dns: {where} sent a malformed transfer of {zone}: {exc}"
                                   ) from None
    if not found:
        raise ConfigError(f"dns: {where} sent no record of zone {zone}")
    return found


def send(address: str, port: int, update: Any, zone: str) -> None:
    """Send one update over TCP; any answer but NOERROR is an error (a refused key: exit 2)."""
    import dns.exception
    import dns.query
    import dns.rcode
    import dns.tsig

    where = f"{address}:{port}"
    try:
        response = dns.query.tcp(update, address, port=port, timeout=TIMEOUT)
    except (dns.tsig.PeerError, dns.tsig.BadSignature) as exc:
        raise _refused(f"the update of {zone}", where, type(exc).__name__) from None
    except (OSError, dns.exception.Timeout, EOFError) as exc:
        raise _unreachable(where, exc) from None
    rcode = response.rcode()
    if rcode in (dns.rcode.NOTAUTH, dns.rcode.REFUSED):
        raise _refused(f"the update of {zone}", where, dns.rcode.to_text(rcode))
    if rcode != dns.rcode.NOERROR:
        raise ExternalCommandError(f"dns: {where} refused the update of {zone}: "
                                   f"{dns.rcode.to_text(rcode)}")


# ---- what coophost pushed before ------------------------------------------------------------

def pushed_path(root: Path) -> Path:
    """.coophost/dns-pushed.json: per zone, the records coophost owns there."""
    return root / STATE_DIR / PUSHED_FILE


def load_pushed(root: Path) -> dict[str, set[Key]]:
    """What coophost pushed to each zone (empty when never pushed)."""
    path = pushed_path(root)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(zone): {(str(n), str(t), str(v)) for n, t, v in rows}
                for zone, rows in data["zones"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not what `coophost dns push` writes ({exc})",
                          hint="remove it: the next push owns what it computes again") from None


def save_pushed(root: Path, pushed: Mapping[str, set[Key]]) -> None:
    """Write the records coophost owns per zone (atomically)."""
    data = {"zones": {zone: sorted([list(k) for k in keys]) for zone, keys in
                      sorted(pushed.items())}}
    atomic_write(pushed_path(root), json.dumps(data, indent=1) + "\n", 0o600)


# ---- the whole push -------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """The primary dns host and where the controller reaches its port 53."""

    host: str
    address: str
    port: int

    @property
    def where(self) -> str:
        """The host and its address:port, for messages."""
        return f"{self.host} ({self.address}:{self.port})"


def primary_target(loaded: Any) -> Target:
    """The co-op's primary dns host (coophost.dns.serve), refused when there is none."""
    import ipaddress
    import socket

    from coophost.dns.serve import DNS_GROUP, DNS_PORT, dns_address, primary

    host = primary(loaded.registry.hosts)
    if host is None:
        raise ConfigError(f"hosts.yml: no host in group {DNS_GROUP}: the co-op serves no zone "
                          "itself", hint="add a host to group dns, or publish "
                                         "`coophost dns records` at your DNS provider")
    address = dns_address(host)
    try:
        ipaddress.ip_address(address)
    except ValueError:
        try:
            address = str(socket.getaddrinfo(address, DNS_PORT,
                                             proto=socket.IPPROTO_TCP)[0][4][0])
        except OSError as exc:
            raise HostUnreachable(f"dns: cannot resolve {host.name}'s address {address!r}: "
                                  f"{exc}", hint="set coophost_dns_address in hosts.yml"
                                  ) from None
    return Target(host.name, str(address), DNS_PORT)


def served_zones(loaded: Any, member_slug: str | None) -> list[str]:
    """The zones of coop.yml's dns.zones holding a member domain (of `member_slug` only)."""
    zones = list(loaded.registry.coop.dns_zones)
    if not zones:
        raise ConfigError("coop.yml: dns.zones: the co-op serves no zone itself",
                          hint="list the zones its dns hosts serve under dns.zones")
    domains = [d.ascii for m in loaded.registry.members.values()
               if member_slug is None or m.slug == member_slug for d in m.domains]
    return sorted({z for z in (zone_of(d, zones) for d in domains) if z is not None})


def tsig_secret(loaded: Any) -> str:
    """The co-op's TSIG secret from the vault; refused when it was never made (no deploy)."""
    from coophost.dns.serve import TSIG_SECTION
    from coophost.secrets import COOP_OWNER, SecretStore

    store = SecretStore(loaded.root, loaded.registry.coop.vault, loaded.catalogue)
    secret = store.stored(COOP_OWNER, TSIG_SECTION, "coophost")
    if secret is None:
        raise UsageError("dns: no TSIG key yet (secrets/_coop.yml: _dns_tsig)",
                         hint="run `coophost deploy`: it makes the key and configures the "
                              "dns hosts with it")
    return secret


def push(root: Path, member_slug: str | None = None, dry_run: bool = False
         ) -> tuple[Target, list[Changes], list[str]]:
    """Bring every served zone of the members' domains to the records they need.

    Returns the primary, each zone's changes (sent unless `dry_run`) and notes about records
    not made yet. Every zone is transferred and diffed before the first update is sent, so a
    refused key or an unreachable host changes nothing. The caller holds the co-op lock.
    """
    from coophost.dns.ops import expected_records
    from coophost.registry import checks
    from coophost.registry.loader import load_registry

    loaded = load_registry(root)
    if member_slug is not None:
        checks.slug(member_slug, "(command line)", "--member")
        if member_slug not in loaded.registry.members:
            raise checks.no_member(member_slug, loaded.registry.members)
    zones = served_zones(loaded, member_slug)
    target = primary_target(loaded)
    # Every member's records, even with --member: a zone may hold several members' names, and
    # records of others are still expected there (never taken for stale ones).
    found = expected_records(loaded)
    key = tsig_key(tsig_secret(loaded))
    keyring = {key.name: key}
    pushed = load_pushed(root)
    planned = []
    for zone in zones:
        current = transfer(target.address, target.port, zone, keyring)
        planned.append(diff(zone, found.records, current, pushed.get(zone, set())))
    if dry_run:
        return target, planned, found.notes
    for changes in planned:
        if changes:
            send(target.address, target.port, build_update(changes, key), changes.zone)
        pushed[changes.zone] = changes.owned
        save_pushed(root, pushed)  # after each accepted update: what the zone now holds
    return target, planned, found.notes
