"""`coophost dns records`: the DNS records every member domain needs."""

from __future__ import annotations

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
@json_option
@pass_app
def check_records(app: AppContext, member_slug: str | None, nameserver: str | None,
                  as_json: bool) -> int:
    """Compare what a resolver answers with the records members need; exit 1 on a mismatch.

    Each expected record is ok (its value is answered), missing (no such name or no record of
    that type), differs (other values answered) or error (the query failed).
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
    findings = check(found.records, resolver(address, port))
    bad = [f for f in findings if f.status != "ok"]
    if as_json:
        app.emit_json({"nameserver": where, "ok": not bad,
                       "records": [f.as_json() for f in findings], "notes": found.notes})
        return EXIT_PENDING if bad else EXIT_OK
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
    if bad:
        next_step(app, "coophost dns records (publish what is missing or differs)")
    return EXIT_PENDING if bad else EXIT_OK


def _lab_nameserver(app: AppContext) -> tuple[str | None, int]:
    """The lab DNS's published port when this co-op is a lab brought up here."""
    from coophost.lab.lab import saved_state

    state = saved_state(app.inventory)
    return ("127.0.0.1", state.dns_port) if state and state.dns_port else (None, 53)


commands: list[click.Command] = [dns]
