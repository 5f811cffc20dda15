"""`coophost dns records`: the DNS records every member domain needs."""

from __future__ import annotations

import click

from coophost.cli.options import AppContext, pass_app
from coophost.errors import UsageError


@click.group()
def dns() -> None:
    """DNS records of member domains."""


@dns.command("records")
@click.option("--member", "member_slug", metavar="MEMBER", help="Only this member's records.")
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

    from coophost.desired import compute
    from coophost.dnsrecords import format_json, format_zone, member_records
    from coophost.registry import checks
    from coophost.registry.loader import load_registry
    from coophost.secrets import SecretStore

    if member_slug is not None:
        checks.slug(member_slug, "(command line)", "--member")
    loaded = load_registry(app.inventory)
    registry = loaded.registry
    if member_slug is not None and member_slug not in registry.members:
        raise UsageError(f"no member {member_slug!r}")
    desired = compute(app.inventory)
    placed = {key: unit.host for key, unit in desired.units.items()}
    members = [m for m in registry.members.values()
               if member_slug is None or m.slug == member_slug]
    store = SecretStore(app.inventory, registry.coop.vault, loaded.catalogue)

    def dkim_key(member: str, service: str) -> str | None:
        return store.stored(member, service, "dkim_key")

    found = member_records(members, placed, registry.hosts, loaded.catalogue, dkim_key)
    for note in found.notes:
        click.echo(f"note: {note}", err=True)
    if output_format == "json":
        click.echo(json.dumps(format_json(found.records), indent=2))
    else:
        click.echo(format_zone(found.records), nl=False)


commands: list[click.Command] = [dns]
