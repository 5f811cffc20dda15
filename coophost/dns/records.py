"""The DNS records each member domain needs, from the catalogue's `dns:` templates. Pure.

Each placed unit's service lists record templates (name, type, value) with placeholders; they
are filled with registry values that were validated on load (IDNA domains, slugs, host
names), checked once more against a strict character set, and turned into dnspython rdata:
TXT records are built from their strings (never parsed, split into 255-byte strings), the
other types are parsed with `dns.rdata.from_text`, which refuses anything but one record.

Addresses come from `Host.dns_addresses` (the host's `coophost_lab_ip` when set, else a
routable `ansible_host` IP literal). A service whose records point at its host
(`{host_fqdn}`, as mail's MX does) also gets the A/AAAA records of that host name, since the
MX is useless without them; they belong in the co-op's zone rather than the member's.

MTA-STS and TLS-RPT records are not produced: no service or role enables them yet (they need
a policy served over HTTPS at mta-sts.<domain>). A service adds them with `dns:` templates.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from coophost.errors import ConfigError
from coophost.registry.catalogue import Catalogue, Service
from coophost.registry.model import Host, Member
from coophost.services import SecretLookup, hooks_for

DEFAULT_TTL = 3600
TXT_CHUNK = 255  # bytes in one character-string (RFC 1035 3.3)
# What a placeholder may be filled with: domain names, IP addresses, base64, a slug.
SAFE_VALUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+/=:_-]*$")
FORMATS = ("zone", "json")
OWNER_RE = re.compile(r"^[A-Za-z0-9_*-]+(?:\.[A-Za-z0-9_-]+)*\.?$")


@dataclass(frozen=True)
class Record:
    """One DNS record: an absolute owner name, its type, TTL and rdata (dnspython)."""

    name: str
    type: str
    ttl: int
    rdata: Any  # dns.rdata.Rdata

    @property
    def value(self) -> str:
        """The rdata in presentation format (TXT: quoted strings), as in a zone file."""
        return str(self.rdata.to_text())

    def zone_line(self) -> str:
        """The record as one RFC 1035 master-file line."""
        return f"{self.name} {self.ttl} IN {self.type} {self.value}"

    def as_json(self) -> dict[str, Any]:
        """The record as {name, type, ttl, value}."""
        return {"name": self.name, "type": self.type, "ttl": self.ttl, "value": self.value}


@dataclass
class Records:
    """The records found, and notes on those that could not be made yet."""

    records: list[Record]
    notes: list[str]


def txt_strings(text: str) -> list[bytes]:
    """Split a TXT value into character-strings of at most 255 bytes."""
    data = text.encode()
    return [data[i:i + TXT_CHUNK] for i in range(0, len(data), TXT_CHUNK)] or [b""]


def make_record(name: str, rtype: str, value: str, ttl: int = DEFAULT_TTL) -> Record:
    """Build and validate one record; raise ConfigError when it is not exactly one record."""
    import dns.exception
    import dns.name
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype
    from dns.rdtypes.ANY.TXT import TXT

    if not OWNER_RE.match(name) or len(name) > 254:
        raise ConfigError(f"DNS record name {name!r} is not a plain domain name")
    if rtype != "TXT" and any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        # dnspython stops at a line's end and would drop the rest silently: refuse it
        raise ConfigError(f"DNS record {name!r} {rtype}: a control character in its value")
    try:
        owner = dns.name.from_text(name, origin=dns.name.root)
        kind = dns.rdatatype.from_text(rtype)
        if kind == dns.rdatatype.TXT:
            rdata: Any = TXT(dns.rdataclass.IN, kind, txt_strings(value))
        else:
            rdata = dns.rdata.from_text(dns.rdataclass.IN, kind, value, origin=dns.name.root,
                                        relativize=False)
    except (dns.exception.DNSException, ValueError) as exc:
        raise ConfigError(f"DNS record {name!r} {rtype}: {exc}") from None
    return Record(owner.to_text(), dns.rdatatype.to_text(kind), ttl, rdata)


def _safe(value: str, what: str) -> str:
    if not SAFE_VALUE_RE.match(value) or len(value) > 1024:
        raise ConfigError(f"DNS records: {what} {value!r} is not a plain name or address")
    return value


def _placeholders(template: Mapping[str, str]) -> set[str]:
    return {field for text in (template["name"], template["value"])
            for _, field, _, _ in string.Formatter().parse(text) if field is not None}


def _addresses(host: Host) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"host_ipv4": [], "host_ipv6": []}
    for text in host.dns_addresses:
        address = ipaddress.ip_address(text)
        found["host_ipv4" if address.version == 4 else "host_ipv6"].append(str(address))
    return found


def unit_records(member: Member, service: Service, host: Host,
                 secret: SecretLookup, ttl: int = DEFAULT_TTL) -> Records:
    """The records one placed unit needs (its templates filled), and what is missing.

    `secret(name)` returns one of the unit's stored secrets (None when not generated yet);
    the service's hooks fill their own placeholders from them (a public key of one).
    """
    settings = member.services[service.name]
    domains = [d.ascii for d in member.domains]
    vhosts: list[str] = []
    for param in service.parameters.values():
        if param.type == "member_domains" and isinstance(settings.get(param.name), list):
            domains = list(settings[param.name])
        if param.type == "vhost" and isinstance(settings.get(param.name), str):
            vhosts = [settings[param.name]]
    values: dict[str, list[str]] = {
        "host_fqdn": [host.fqdn], "slug": [member.slug],
        "domain": domains, "vhost": vhosts, **_addresses(host)}
    records: list[Record] = []
    notes: list[str] = []
    hooks = hooks_for(service)
    needed_all = {name for template in service.dns for name in _placeholders(template)}
    if needed_all & hooks.dns_placeholders:  # only asked when a template needs its values
        extra = hooks.dns_values(member, settings, secret)
        notes.extend(extra.notes)
        values.update({name: extra.values.get(name, []) for name in hooks.dns_placeholders})
    for template in service.dns:
        needed = _placeholders(template)
        if "host_ipv4" in needed and not values["host_ipv4"] and not values["host_ipv6"]:
            notes.append(f"{member.slug}/{service.name}: host {host.name} has no address "
                         "(coophost_lab_ip or an IP as ansible_host); its A records are left out")
        combos: list[dict[str, str]] = [{}]
        for field in sorted(needed):
            combos = [{**combo, field: _safe(value, field)}
                      for combo in combos for value in values[field]]
        for combo in combos:
            records.append(make_record(template["name"].format(**combo), template["type"],
                                       template["value"].format(**combo), ttl))
        if "host_fqdn" in needed:
            records.extend(host_records(host, ttl))
    return Records(records, notes)


def host_records(host: Host, ttl: int = DEFAULT_TTL) -> list[Record]:
    """A and AAAA records of a host's name."""
    found = _addresses(host)
    name = _safe(host.fqdn, "host name")
    return ([make_record(name, "A", a, ttl) for a in found["host_ipv4"]]
            + [make_record(name, "AAAA", a, ttl) for a in found["host_ipv6"]])


def member_records(members: Iterable[Member], placed: Mapping[tuple[str, str], str],
                   hosts: Mapping[str, Host], catalogue: Catalogue,
                   secret: Callable[[str, str, str], str | None],
                   ttl: int = DEFAULT_TTL) -> Records:
    """Every record the members' placed units need, without duplicates, in a stable order.

    `placed` maps (member, service) to a host; `secret(member, service, name)` returns one
    of the unit's stored secrets, or None when none was generated yet. Units not placed are
    skipped.
    """
    result = Records([], [])
    seen: set[tuple[str, str, str]] = set()
    for member in sorted(members, key=lambda m: m.slug):
        for service_name in sorted(member.services):
            host_name = placed.get((member.slug, service_name))
            if host_name is None:
                continue
            found = unit_records(member, catalogue.services[service_name], hosts[host_name],
                                 functools.partial(secret, member.slug, service_name), ttl)
            result.notes.extend(found.notes)
            for record in found.records:
                key = (record.name, record.type, record.value)
                if key not in seen:
                    seen.add(key)
                    result.records.append(record)
    return result


def format_zone(records: Iterable[Record]) -> str:
    """RFC 1035 master-file lines, one per record, names fully qualified."""
    return "".join(record.zone_line() + "\n" for record in records)


def format_json(records: Iterable[Record]) -> list[dict[str, Any]]:
    """A list of {name, type, ttl, value}."""
    return [record.as_json() for record in records]
