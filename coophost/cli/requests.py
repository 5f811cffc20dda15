"""`coophost requests ...`: members' service requests, as the sysadmins see and decide them."""

from __future__ import annotations

import click

from coophost.cli.options import (
    AppContext,
    escape,
    json_option,
    name_argument,
    name_option,
    next_step,
    pass_app,
    table,
)


@click.group()
def requests() -> None:
    """Members' requests for services: list, approve, deny (or file one for a member)."""


@requests.command("list")
@click.option("--state", type=click.Choice(["pending", "approved", "deployed", "denied",
                                            "canceled", "all"]), default="all",
              show_default=True, help="Only requests in this state.")
@name_option("member", "Only this member's requests.", dest="member_slug")
@json_option
@pass_app
def list_requests(app: AppContext, state: str, member_slug: str | None, as_json: bool) -> None:
    """Every request with its state through to deployed."""
    from coophost.members.requests import deployed_units, load_requests, shown_state

    found = load_requests(app.inventory, member_slug, closed=state != "pending")
    deployed = deployed_units(app.inventory) if any(r.state == "approved" for r in found) else []
    rows = []
    for request in found:
        shown = shown_state(request, deployed)
        if (state in ("all", shown)) and member_slug in (None, request.member):
            rows.append({**request.as_plain(), "state": shown})
    if as_json:
        app.emit_json(rows)
        return
    if not rows:
        app.out.print("No requests.")
        return
    from coophost.fmt import when

    table(app, ["id", "member", "service", "settings", "state", "filed", "by", "why"], [
        [str(row["id"]), row["member"], row["service"],
         escape(", ".join(f"{k}={v}" for k, v in row["settings"].items())), row["state"],
         when(row["filed"]), escape(row["filed_by"]), escape(row["why"])] for row in rows])


@requests.command("file")
@name_argument("member", "slug")
@name_argument("service", "service_name")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="A setting of the service (repeatable), typed as the catalogue says.")
@pass_app
def file_for_member(app: AppContext, slug: str, service_name: str,
                    assignments: tuple[str, ...]) -> None:
    """File a request on a member's behalf (members use `request` in their shell)."""
    from coophost.members.audit import actor
    from coophost.members.requests import file_request
    from coophost.registry.catalogue import load_catalogue
    from coophost.registry.edit import parse_setting

    service = load_catalogue().get(service_name, "(command line)", "service")
    settings = dict(parse_setting(service, a) for a in assignments)
    request = file_request(app.inventory, slug, service_name, settings,
                           f"{actor()} (for {slug})")
    app.out.print(f"request {request.id}: {slug} asks for {service_name} (pending)")
    next_step(app, f"coophost requests approve {request.id}")


@requests.command("approve")
@click.argument("request_id", type=int, metavar="ID")
@click.option("--why", default="", help="A note kept with the decision.")
@pass_app
def approve(app: AppContext, request_id: int, why: str) -> None:
    """Approve a pending request: re-check allowances, update the member file, place it."""
    from coophost.members.audit import actor
    from coophost.members.requests import approve_request

    request, host = approve_request(app.inventory, request_id, actor(), why)
    app.out.print(f"request {request.id} approved: {request.member}/{request.service} placed "
                  f"on {host}")
    next_step(app, "coophost deploy")


@requests.command("deny")
@click.argument("request_id", type=int, metavar="ID")
@click.option("--why", required=True, help="Why (the member sees it).")
@pass_app
def deny(app: AppContext, request_id: int, why: str) -> None:
    """Deny a pending request, saying why."""
    from coophost.members.audit import actor
    from coophost.members.requests import deny_request

    request = deny_request(app.inventory, request_id, actor(), why)
    app.out.print(f"request {request.id} denied")
    next_step(app, "coophost requests list")


commands: list[click.Command] = [requests]
