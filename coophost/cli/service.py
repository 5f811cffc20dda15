"""`coophost service ...`: the catalogue, and a member's services enabled or disabled."""

from __future__ import annotations

import click

from coophost.cli.options import (
    AppContext,
    escape,
    json_option,
    name_argument,
    next_step,
    pass_app,
)


@click.group()
def service() -> None:
    """Services of the catalogue: list, enable, disable."""


@service.command("list")
@json_option
@pass_app
def service_list(app: AppContext, as_json: bool) -> None:
    """List the catalogue's services: available ones (with their parameters), and coming ones."""
    from dataclasses import asdict

    from coophost.registry.catalogue import load_catalogue

    services = load_catalogue().services
    if as_json:
        app.emit_json({name: {"status": s.status, "description": s.description,
                              "group": s.group, "role": s.role,
                              "parameters": {p: asdict(v) for p, v in s.parameters.items()},
                              "cost": s.cost, "dns": list(s.dns), "data": s.data}
                       for name, s in services.items()})
        return
    coming = [name for name, svc in services.items() if not svc.available]
    for name, svc in services.items():
        if not svc.available:
            continue
        app.out.print(f"[bold]{name}[/] (available; group {svc.group}): "
                      f"{escape(svc.description)}")
        for param in svc.parameters.values():
            limits = " ".join(x for x in (
                f"min {param.min}" if param.min is not None else "",
                f"max {param.max}" if param.max is not None else "",
                f"one of {'|'.join(param.choices)}" if param.choices else "") if x)
            app.out.print(f"  {param.name} ({param.type}; default {param.default!r}"
                          f"{'; ' + limits if limits else ''}): {escape(param.description)}")
    for name in coming:
        app.out.print(f"[bold]{name}[/] (coming: no role deploys it yet, it cannot be enabled "
                      f"or requested): {escape(services[name].description)}")


@service.command("enable")
@name_argument("member", "slug")
@name_argument("service", "service_name")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="A setting (repeatable); YAML values for lists, e.g. mailboxes='[a, b]'.")
@pass_app
def service_enable(app: AppContext, slug: str, service_name: str,
                   assignments: tuple[str, ...]) -> None:
    """Enable a service for a member (or change its settings) and place it on a host."""
    from coophost.lock import coop_lock
    from coophost.registry.catalogue import load_catalogue
    from coophost.registry.edit import draft_enable, enable_service, parse_setting
    from coophost.registry.loader import load_registry, with_hosts
    from coophost.registry.placement import place_unit

    svc = load_catalogue().get(service_name)
    settings = dict(parse_setting(svc, a) for a in assignments)
    root = app.inventory
    with coop_lock(root, purpose=f"service enable {slug} {service_name}"):
        loaded = load_registry(root, need_hosts=False)
        draft = draft_enable(loaded, slug, service_name, settings)
        host = draft.member.placement.get(service_name)  # sticky: a placed unit stays there
        if host is None:
            host = place_unit(with_hosts(loaded), loaded.catalogue, draft.member, service_name)
        _, host = enable_service(root, loaded, draft, service_name, host)
    app.out.print(f"{slug}/{service_name} enabled, placed on {host}")
    next_step(app, "coophost deploy")


@service.command("disable")
@name_argument("member", "slug")
@name_argument("service", "service_name")
@pass_app
def service_disable(app: AppContext, slug: str, service_name: str) -> None:
    """Disable a member's service (the next deploy removes it)."""
    from coophost.lock import coop_lock
    from coophost.registry.edit import disable_service
    from coophost.registry.loader import load_registry

    with coop_lock(app.inventory, purpose=f"service disable {slug} {service_name}"):
        loaded = load_registry(app.inventory, need_hosts=False)
        disable_service(app.inventory, loaded, slug, service_name)
    app.out.print(f"{slug}/{service_name} disabled")
    next_step(app, "coophost deploy")


commands: list[click.Command] = [service]
