"""`coophost dns`: the records member domains need; pushing them to the co-op's own DNS.

`records` prints them to paste at a DNS provider, `check` compares what is answered (and, for
the zones the co-op serves, validates their DNSSEC chain), `push` sends them to the co-op's
authoritative DNS (hosts of group dns) by TSIG-signed dynamic updates, `ds` prints and
records the DS records a served zone's registrar needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from coophost.cli.options import AppContext, json_option, name_option, next_step, pass_app
from coophost.errors import EXIT_OK, EXIT_PENDING


@click.group()
def dns() -> None:
    """DNS records of member domains."""


@dns.command("records")
@name_option("member", "Only this member's records.", dest="member_slug")
@click.option("--format", "output_format", type=click.Choice(["zone", "json"]),
              default="zone", show_default=True,
              help="RFC 1035 zone lines, or a JSON list of {name, type, ttl, value}.")
@pass_app
def records(app: AppContext, member_slug: str | None, output_format: str) -> None:
    """Print every record the members' placed services need (A/AAAA, MX, SPF, DKIM, DMARC).

    Records pointing at a host (MX) come with that host's A/AAAA records. Notes about records
    that cannot be made yet (no DKIM key generated) go to standard error.
    """
    import json

    from coophost.dns.ops import expected_records
    from coophost.dns.records import format_json, format_zone

    found = expected_records(app.inventory, member_slug)
    for note in found.notes:
        click.echo(f"note: {note}", err=True)
    if output_format == "json":
        click.echo(json.dumps(format_json(found.records), indent=2))
    else:
        click.echo(format_zone(found.records), nl=False)
        next_step(app, "publish these at the domains' DNS, then coophost dns check")


@dns.command("check")
@name_option("member", "Only this member's records.", dest="member_slug")
@click.option("--nameserver", metavar="IP[:PORT]",
              help="Ask this resolver [default: the lab's DNS for a lab co-op, else the "
                   "system's resolvers].")
@click.option("--dnssec", is_flag=True,
              help="For the zones the co-op serves: ask its primary dns host, and validate "
                   "each answer's DNSSEC chain up to the DS recorded by `coophost dns ds`.")
@json_option
@pass_app
def check_records(app: AppContext, member_slug: str | None, nameserver: str | None,
                  dnssec: bool, as_json: bool) -> int:
    """Compare what a resolver answers with the records members need; exit 1 on a mismatch.

    Each expected record is ok (its value is answered), missing (no such name or no record of
    that type), differs (other values answered) or error (the query failed). With --dnssec,
    the records of served zones are asked of the co-op's primary dns host, and each zone's
    DNSKEY (against the recorded DS) and every answered RRset's RRSIG must validate.
    """
    from coophost.dns.ops import check, expected_records, parse_nameserver, resolver

    found = expected_records(app.inventory, member_slug)
    if nameserver is not None:
        address: str | None
        address, port = parse_nameserver(nameserver)
        where = f"{address}:{port}"
    else:
        address, port = _lab_nameserver(app)
        where = f"the lab DNS {address}:{port}" if address else "the system's resolvers"
    ask = resolver(address, port)
    chain: list = []
    if dnssec:
        ask, served_where, chain = _served_resolver(app, found.records, ask)
        where += f" (served zones: {served_where})"
    findings = check(found.records, ask)
    bad = [f for f in findings if f.status != "ok"]
    bad_chain = [c for c in chain if not c.ok]
    failed = bool(bad or bad_chain)
    if as_json:
        app.emit_json({"nameserver": where, "ok": not failed,
                       "records": [f.as_json() for f in findings], "notes": found.notes,
                       **({"dnssec": [c.as_json() for c in chain]} if dnssec else {})})
        return EXIT_PENDING if failed else EXIT_OK
    for note in found.notes:
        click.echo(f"note: {note}", err=True)
    for finding in findings:
        line = f"{finding.status:8} {finding.record.name} {finding.record.type}"
        if finding.status != "ok":
            line += f"  expected {finding.record.value}"
            line += (f"  answered {' | '.join(finding.answered)}" if finding.answered
                     else f"  ({finding.detail})")
        click.echo(line)
    click.echo(f"{len(findings) - len(bad)} of {len(findings)} records answered as expected "
               f"by {where}")
    if dnssec:
        for item in chain:
            click.echo(f"{'signed' if item.ok else 'BOGUS':8} {item.zone}: {item.what}"
                       + (f"  ({item.detail})" if item.detail else ""))
        click.echo(f"{len(chain) - len(bad_chain)} of {len(chain)} DNSSEC validations passed")
    if bad:
        next_step(app, "coophost dns push (zones the co-op serves), coophost dns records "
                       "(publish what is missing or differs elsewhere)" if dnssec else
                  "coophost dns records (publish what is missing or differs)")
    return EXIT_PENDING if failed else EXIT_OK


def _served_resolver(app: AppContext, records: list, fallback: Callable[[str, str], Any]
                     ) -> tuple[Callable[[str, str], Any], str, list]:
    """A resolver asking the primary dns host for names of served zones, and their chain."""
    from coophost.dns.ops import resolver
    from coophost.dns.serve import zone_of
    from coophost.registry.loader import load_registry

    loaded = load_registry(app.inventory)
    zones = list(loaded.registry.coop.dns_zones)
    target, chain = _dnssec_findings(app, loaded, records)
    primary = resolver(target.address, target.port)

    def ask(name: str, rtype: str) -> Any:
        return (primary if zone_of(name, zones) else fallback)(name, rtype)

    return ask, target.where, chain


@dns.command("push")
@name_option("member", "Only the zones of this member's domains.", dest="member_slug")
@click.option("--dry-run", is_flag=True,
              help="Show what would change; send nothing (exit 1 when something would).")
@json_option
@pass_app
def push_records(app: AppContext, member_slug: str | None, dry_run: bool, as_json: bool
                 ) -> int:
    """Send the members' records of the zones the co-op serves to its primary dns host.

    For each zone of coop.yml's dns.zones holding a member domain: the zone is transferred
    (AXFR) and only the differences are sent, as one RFC 2136 update signed with the co-op's
    TSIG key. Records coophost did not push are never removed; SOA, NS and DNSSEC records are
    never touched (Knot signs every change). A key the server refuses exits 2, nothing changed.
    """
    from coophost.dns.push import push
    from coophost.lock import coop_lock

    with coop_lock(app.inventory, purpose="dns push"):
        target, planned, notes = push(app.inventory, member_slug, dry_run)
    changed = any(planned)
    if as_json:
        app.emit_json({"server": target.where, "dry_run": dry_run, "notes": notes,
                       "zones": [{"zone": c.zone, "add": [a.as_json() for a in c.add],
                                  "delete": [d.as_json() for d in c.delete],
                                  "sent": bool(c) and not dry_run} for c in planned]})
        return EXIT_PENDING if dry_run and changed else EXIT_OK
    for note in notes:
        click.echo(f"note: {note}", err=True)
    for changes in planned:
        verb = "would change" if dry_run else "changed"
        if not changes:
            click.echo(f"zone {changes.zone}: up to date")
            continue
        click.echo(f"zone {changes.zone}: {verb} ({len(changes.add)} added, "
                   f"{len(changes.delete)} deleted)")
        for change in changes.delete:
            click.echo(f"  - {' '.join(change.key[:2])} {change.ttl} {change.key[2]}")
        for change in changes.add:
            click.echo(f"  + {' '.join(change.key[:2])} {change.ttl} {change.key[2]}")
    click.echo(f"{len(planned)} zones on {target.where}"
               + (", nothing sent (dry run)" if dry_run else ""))
    return EXIT_PENDING if dry_run and changed else EXIT_OK


@dns.command("ds")
@click.argument("zone", required=False)
@json_option
@pass_app
def ds_records(app: AppContext, zone: str | None, as_json: bool) -> None:
    """Print the DS records to give each served zone's registrar (or ZONE's), and record them.

    Computed (SHA-256) from the zone's key-signing keys as the primary dns host answers them;
    `dns check` then validates the zone's DNSSEC chain against the recorded DS.
    """
    from coophost.dns.dnssec import ask, ds_records, load_anchors, save_anchors
    from coophost.dns.push import primary_target
    from coophost.lock import coop_lock
    from coophost.registry.loader import load_registry

    loaded = load_registry(app.inventory)
    zones = list(loaded.registry.coop.dns_zones)
    if zone is not None:
        if zone not in zones:
            from coophost.errors import UsageError

            raise UsageError(f"ZONE {zone!r}: not served by the co-op (coop.yml: dns.zones: "
                             f"{', '.join(zones) or 'none'})")
        zones = [zone]
    target = primary_target(loaded)
    found = {}
    for name in zones:
        keys, _ = ask(target.address, target.port, name + ".", "DNSKEY")
        rows = ds_records(name, keys or [])
        if not rows:
            from coophost.errors import ExternalCommandError

            raise ExternalCommandError(f"dns: {target.where} answers no key-signing key for "
                                       f"{name} (is it deployed and signed?)")
        found[name] = rows
    with coop_lock(app.inventory, purpose="dns ds"):
        anchors = load_anchors(app.inventory)
        anchors.update(found)
        save_anchors(app.inventory, anchors)
    if as_json:
        app.emit_json({"zones": {z: [ds.to_text() for ds in rows] for z, rows in found.items()}})
        return
    for name, rows in found.items():
        for ds in rows:
            click.echo(f"{name}. 3600 IN DS {ds.to_text()}")
    next_step(app, "give these DS records to each zone's registrar; coophost dns check "
                   "validates the chain against them")


def _dnssec_findings(app: AppContext, loaded: Any, records: list) -> tuple[Any, list]:
    """Validate the chain of each served zone holding an expected record (see dns/dnssec.py)."""
    from coophost.dns.dnssec import ask, load_anchors, validate_chain
    from coophost.dns.push import primary_target
    from coophost.dns.serve import zone_of

    zones = list(loaded.registry.coop.dns_zones)
    target = primary_target(loaded)
    anchors = load_anchors(app.inventory)
    by_zone: dict[str, list[tuple[str, str]]] = {}
    for record in records:
        zone = zone_of(record.name, zones)
        key = (record.name, record.type)
        if zone is not None and key not in by_zone.setdefault(zone, []):
            by_zone[zone].append(key)
    findings = []
    for zone, keys in sorted(by_zone.items()):
        dnskey, sigs = ask(target.address, target.port, zone + ".", "DNSKEY")
        answers = [ask(target.address, target.port, name, rtype) for name, rtype in keys]
        findings.extend(validate_chain(zone, dnskey, sigs, anchors.get(zone, []),
                                       [a for a in answers if a[0] is not None]))
    return target, findings


def _lab_nameserver(app: AppContext) -> tuple[str | None, int]:
    """The lab DNS's published port when this co-op is a lab brought up here."""
    from coophost.lab.lab import saved_state

    state = saved_state(app.inventory)
    return ("127.0.0.1", state.dns_port) if state and state.dns_port else (None, 53)


commands: list[click.Command] = [dns]
