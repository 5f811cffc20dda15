"""Gather a co-op's DNS records, serve them from the lab DNS, check what resolvers answer.

`expected_records` reads the registry and the vault; `dnsmasq_config` and `compare` are pure;
`resolver` asks one resolver (dnspython) and returns the normalised answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coophost.dns.records import Record, Records, member_records
from coophost.errors import ConfigError, UsageError
from coophost.registry.loader import Loaded

# What a dnsmasq option value may hold outside quotes: names, addresses, numbers.
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:")
DNSMASQ_MARKER = "# Written by `coophost lab dns sync` from `coophost dns records`. Regenerated."


def expected_records(source: Path | Loaded, member_slug: str | None = None) -> Records:
    """Every record the co-op needs (one member's with `member_slug`).

    `source`: the co-op directory, or the co-op the command loaded.
    """
    from coophost.desired.units import compute
    from coophost.registry import checks
    from coophost.registry.loader import load_registry
    from coophost.secrets import SecretStore

    if member_slug is not None:
        checks.slug(member_slug, "(command line)", "--member")
    loaded = source if isinstance(source, Loaded) else load_registry(source)
    root, registry = loaded.root, loaded.registry
    if member_slug is not None and member_slug not in registry.members:
        raise checks.no_member(member_slug, registry.members)
    desired = compute(loaded)
    placed = {key: unit.host for key, unit in desired.units.items()}
    members = [m for m in registry.members.values()
               if member_slug is None or m.slug == member_slug]
    store = SecretStore(root, registry.coop.vault, loaded.catalogue)

    def secret(member: str, service: str, name: str) -> str | None:
        return store.stored(registry.members[member].owner, service, name)

    return member_records(members, placed, registry.hosts, loaded.catalogue, secret)


# ---- the lab's dnsmasq ----------------------------------------------------------------------

def _plain(value: str, record: Record) -> str:
    bare = value.rstrip(".")
    if not bare or not set(bare) <= _PLAIN:
        raise ConfigError(f"lab DNS: {record.name} {record.type}: {value!r} is not a plain "
                          "name or address")
    return bare


def _quoted(data: bytes, record: Record) -> str:
    text = data.decode("ascii", errors="strict") if data.isascii() else ""
    if not data.isascii() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ConfigError(f"lab DNS: {record.name} TXT: only printable ASCII can be served")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dnsmasq_line(record: Record) -> str:
    """One dnsmasq option serving `record` (A, AAAA, MX, TXT, CNAME, SRV)."""
    name = _plain(record.name, record)
    rdata = record.rdata
    if record.type in ("A", "AAAA"):
        return f"host-record={name},{_plain(rdata.address, record)},{record.ttl}"
    if record.type == "MX":
        return f"mx-host={name},{_plain(rdata.exchange.to_text(), record)},{rdata.preference}"
    if record.type == "TXT":
        return f"txt-record={name}," + ",".join(_quoted(s, record) for s in rdata.strings)
    if record.type == "CNAME":
        return f"cname={name},{_plain(rdata.target.to_text(), record)},{record.ttl}"
    if record.type == "SRV":
        return (f"srv-host={name},{_plain(rdata.target.to_text(), record)},{rdata.port},"
                f"{rdata.priority},{rdata.weight}")
    raise ConfigError(f"lab DNS: {record.name}: dnsmasq cannot serve {record.type} records")


def dnsmasq_config(records: Iterable[Record], served: Iterable[str] = ()) -> str:
    """The dnsmasq options serving `records`, skipping A/AAAA of names in `served`.

    The lab already serves its hosts' addresses from its hosts file: `served` lists those
    names so they are not answered twice.
    """
    skip = {name.rstrip(".").lower() for name in served}
    lines = [DNSMASQ_MARKER]
    for record in records:
        if record.type in ("A", "AAAA") and record.name.rstrip(".").lower() in skip:
            continue
        lines.append(dnsmasq_line(record))
    return "\n".join(lines) + "\n"


# ---- checking what resolvers answer ---------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    """What a resolver said for one (name, type): normalised values, or why there are none."""

    values: frozenset[str]
    problem: str = ""  # "", "no such name", "no answer", or the error


@dataclass(frozen=True)
class Finding:
    """One expected record and what was answered for its name and type."""

    record: Record
    status: str  # ok | missing | differs | error
    answered: tuple[str, ...]
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        """The finding as {name, type, expected, status, answered, detail}."""
        return {**self.record.as_json(), "expected": normalise(self.record.type,
                                                               self.record.rdata),
                "status": self.status, "answered": list(self.answered), "detail": self.detail}


def normalise(rtype: str, rdata: Any) -> str:
    """A comparable text for one rdata: TXT strings joined, names lower-case and absolute."""
    if rtype == "TXT":
        return b"".join(rdata.strings).decode("utf-8", errors="replace")
    if rtype == "MX":
        return f"{rdata.preference} {rdata.exchange.to_text().lower()}"
    if rtype in ("A", "AAAA"):
        return str(rdata.address)
    return str(rdata.to_text()).lower()


def compare(expected: Iterable[Record], answers: Mapping[tuple[str, str], Answer]
            ) -> list[Finding]:
    """Each expected record against the answers for its (name, type).

    A record is ok when its value is among the answers (other values beside it are allowed:
    a domain has more TXT records than SPF); missing when the name or type has no answer;
    differs when there are answers but not this value; error when the query failed.
    """
    findings = []
    for record in expected:
        answer = answers.get((record.name, record.type), Answer(frozenset(), "not asked"))
        want = normalise(record.type, record.rdata)
        values = tuple(sorted(answer.values))
        if want in answer.values:
            status = "ok"
        elif answer.problem in ("no such name", "no answer"):
            status = "missing"
        elif answer.problem:
            status = "error"
        else:
            status = "differs"
        findings.append(Finding(record, status, values, answer.problem))
    return findings


Resolve = Callable[[str, str], Answer]


def resolver(nameserver: str | None = None, port: int = 53, timeout: float = 3.0) -> Resolve:
    """A function asking `nameserver` (or the system's resolvers) for one name and type."""
    import dns.exception
    import dns.resolver

    if nameserver is None:
        res = dns.resolver.Resolver()
    else:
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = [nameserver]
        res.port = port
    res.lifetime = timeout
    res.cache = None

    def ask(name: str, rtype: str) -> Answer:
        try:
            found = res.resolve(name, rtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return Answer(frozenset(), "no such name")
        except (dns.exception.DNSException, OSError) as exc:
            return Answer(frozenset(), f"query failed: {exc}")
        if found.rrset is None:
            return Answer(frozenset(), "no answer")
        return Answer(frozenset(normalise(rtype, r) for r in found.rrset))

    return ask


def check(expected: list[Record], ask: Resolve) -> list[Finding]:
    """Query every (name, type) the expected records need once, then compare."""
    answers: dict[tuple[str, str], Answer] = {}
    for record in expected:
        key = (record.name, record.type)
        if key not in answers:
            answers[key] = ask(*key)
    return compare(expected, answers)


def parse_nameserver(text: str) -> tuple[str, int]:
    """`IP` or `IP:PORT` (`[IPv6]:PORT`) -> (ip, port), refusing anything else."""
    import ipaddress

    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise UsageError(f"--nameserver {text!r}: give an IP address, optionally with :PORT"
                         ) from None
    if not 0 < number < 65536:
        raise UsageError(f"--nameserver {text!r}: port {number} is out of range")
    return str(address), number
