"""`coophost init`, `member ...`, `service ...` and `secrets show`: the registry's commands."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import click

from coophost.cli.options import AppContext, json_option, pass_app
from coophost.errors import EXIT_USAGE, ConflictError, CoophostError, UsageError
from coophost.layout import STATE_DIR


def _root(app: AppContext) -> Path:
    return app.inventory


def _table(app: AppContext, columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    table = Table(*columns, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*row)
    app.out.print(table)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@click.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--name", required=True, help="The co-op's name.")
@click.option("--domain", required=True, help="The co-op's primary domain.")
@click.option("--contact", required=True, help="The sysadmins' contact address.")
@pass_app
def init(app: AppContext, directory: Path, name: str, domain: str, contact: str) -> None:
    """Create a new co-op directory (coop.yml, hosts.yml, members/, secrets/)."""
    from coophost.registry.init import init_coop

    created = init_coop(directory, name=name, domain=domain, contact=contact)
    for path in created:
        app.out.print(f"created {_escape(str(path))}")
    app.out.print(f"next: coophost -i {_escape(str(directory))} host add ...")


# ---- member ---------------------------------------------------------------------------------

@click.group()
def member() -> None:
    """Members: add, list, show, edit, suspend, resume, export, depart, remove, move."""


@member.command("add")
@click.argument("slug")
@click.option("--name", required=True, help="Display name.")
@click.option("--contact", required=True, help="Contact email address.")
@click.option("--domain", "domains", multiple=True, help="A domain of the member (repeatable).")
@click.option("--ssh-key", "ssh_keys", multiple=True, help="An SSH public key line (repeatable).")
@pass_app
def member_add(app: AppContext, slug: str, name: str, contact: str, domains: tuple[str, ...],
               ssh_keys: tuple[str, ...]) -> None:
    """Register a new member (members/SLUG.yml)."""
    from coophost.registry.edit import add_member

    path = add_member(_root(app), slug, name, contact, list(domains), list(ssh_keys))
    app.out.print(f"added member {slug} ({_escape(str(path))})")


@member.command("list")
@json_option
@pass_app
def member_list(app: AppContext, as_json: bool) -> None:
    """List members with their status, domains and services."""
    from coophost.registry.loader import load_registry

    members = load_registry(_root(app), need_hosts=False).registry.members
    if as_json:
        app.emit_json([{"slug": m.slug, "name": m.name, "status": m.status,
                        "domains": [d.name for d in m.domains],
                        "services": sorted(m.services)} for m in members.values()])
        return
    _table(app, ["member", "status", "services", "domains", "name"],
           [[m.slug, m.status, ",".join(sorted(m.services)) or "-",
             _escape(",".join(d.name for d in m.domains)) or "-", _escape(m.name)]
            for m in members.values()])


@member.command("show")
@click.argument("slug")
@json_option
@pass_app
def member_show(app: AppContext, slug: str, as_json: bool) -> None:
    """Show one member's record, services (with defaults) and placement."""
    from coophost.registry.edit import read_member_text
    from coophost.registry.loader import load_registry

    read_member_text(_root(app), slug)
    record = load_registry(_root(app), need_hosts=False).registry.members[slug]
    data: dict[str, Any] = record.to_plain()
    data["domains"] = [d.name for d in record.domains]
    del data["file"]
    if as_json:
        app.emit_json(data)
        return
    for key in ("slug", "name", "contact", "status"):
        app.out.print(f"[bold]{key}:[/] {_escape(str(data[key]))}")
    app.out.print(f"[bold]domains:[/] {_escape(', '.join(data['domains'])) or '-'}")
    app.out.print(f"[bold]ssh keys:[/] {len(record.ssh_keys)}")
    for service, settings in sorted(record.services.items()):
        where = record.placement.get(service, "not placed yet")
        app.out.print(f"[bold]{service}[/] on {_escape(where)}")
        for key, value in settings.items():
            app.out.print(f"  {key}: {_escape(str(value))}")


@member.command("edit")
@click.argument("slug")
@click.option("--name", help="New display name.")
@click.option("--contact", help="New contact address.")
@click.option("--add-domain", multiple=True, help="Add a domain (repeatable).")
@click.option("--remove-domain", multiple=True, help="Remove a domain (repeatable).")
@click.option("--add-ssh-key", multiple=True, help="Add an SSH public key (repeatable).")
@click.option("--remove-ssh-key", multiple=True, help="Remove an SSH public key (repeatable).")
@pass_app
def member_edit(app: AppContext, slug: str, name: str | None, contact: str | None,
                add_domain: tuple[str, ...], remove_domain: tuple[str, ...],
                add_ssh_key: tuple[str, ...], remove_ssh_key: tuple[str, ...]) -> None:
    """Change a member: with options, or in $EDITOR (validated before it is saved)."""
    from coophost.registry import edit

    root = _root(app)
    if any([name, contact, add_domain, remove_domain, add_ssh_key, remove_ssh_key]):
        edit.edit_fields(root, slug, name=name, contact=contact, add_domains=add_domain,
                         remove_domains=remove_domain, add_keys=add_ssh_key,
                         remove_keys=remove_ssh_key)
        app.out.print(f"saved member {slug}")
        return
    original = edit.read_member_text(root, slug)
    edited = _run_editor(original, slug)
    if edited == original:
        app.out.print("no change")
        return
    try:
        edit.replace_member_text(root, slug, edited, original)
    except ConflictError as exc:
        kept = _keep_rejected(root, slug, edited)
        exc.hint = (f"the change saved meanwhile was kept; your edit is kept in {kept}: "
                    f"re-apply it with `coophost member edit {slug}`")
        raise
    except CoophostError as exc:
        kept = _keep_rejected(root, slug, edited)
        exc.hint = f"your edit is kept in {kept}; nothing was saved"
        raise
    app.out.print(f"saved member {slug}")


def _run_editor(text: str, slug: str) -> str:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.TemporaryDirectory(prefix="coophost-edit-") as folder:
        path = Path(folder) / f"{slug}.yml"
        path.write_text(text)
        result = subprocess.run([*shlex.split(editor), str(path)], check=False)
        if result.returncode != 0:
            raise UsageError(f"the editor exited with status {result.returncode}; nothing saved")
        return path.read_text()


def _keep_rejected(root: Path, slug: str, text: str) -> Path:
    from coophost.fsutil import atomic_write

    folder = root / STATE_DIR / "rejected"
    path = folder / f"{slug}.yml"
    number = 0
    while path.exists():  # an earlier kept edit is never overwritten
        number += 1
        path = folder / f"{slug}.{number}.yml"
    atomic_write(path, text, 0o600)
    return path


@member.command("suspend")
@click.argument("slug")
@click.option("--why", default="", help="A note for the audit log.")
@pass_app
def member_suspend(app: AppContext, slug: str, why: str) -> None:
    """Suspend a member: no login works after the next deploy; the data stays.

    Mail keeps arriving, or bounces, as coop.yml's `suspended_mail` says.
    """
    from coophost.members.audit import actor
    from coophost.members.lifecycle import set_status

    if set_status(_root(app), slug, "suspended", actor(), why) is None:
        app.out.print(f"{slug} is suspended already: nothing changed")
        return
    app.out.print(f"suspended {slug}; `coophost deploy` applies it")


@member.command("resume")
@click.argument("slug")
@click.option("--why", default="", help="A note for the audit log.")
@pass_app
def member_resume(app: AppContext, slug: str, why: str) -> None:
    """Resume a suspended member (logins work again after the next deploy)."""
    from coophost.members.audit import actor
    from coophost.members.lifecycle import set_status

    if set_status(_root(app), slug, "active", actor(), why) is None:
        app.out.print(f"{slug} is active already: nothing changed")
        return
    app.out.print(f"resumed {slug}; `coophost deploy` applies it")


@member.command("export")
@click.argument("slug")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The archive to write (tar.gz); `-` for standard output.")
@pass_app
def member_export(app: AppContext, slug: str, out: Path) -> None:
    """One archive of all the member's data on every host, with MANIFEST.json and SHA256SUMS.

    Streamed from each host (tar over SSH, host keys pinned) into the archive: no second copy
    is made anywhere. The file appears only when the export is complete.
    """
    import sys

    from coophost.fsutil import atomic_stream
    from coophost.members.export import export_member
    from coophost.registry import checks

    checks.slug(slug, "(command line)", "member")
    if str(out) == "-":
        export_member(_root(app), slug, sys.stdout.buffer)
        return
    with atomic_stream(out) as handle:
        manifest = export_member(_root(app), slug, handle)
    app.err.print(f"{out}: {len(manifest.files)} file(s) of {slug} from "
                  f"{len(manifest.sources)} source(s)")


@member.command("depart")
@click.argument("slug")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Where the member's data archive goes (made first).")
@pass_app
def member_depart(app: AppContext, slug: str, out: Path) -> None:
    """A member leaves: export its data, stop its logins; services go after retention."""
    from coophost.members.audit import actor
    from coophost.members.lifecycle import depart
    from coophost.registry import checks

    checks.slug(slug, "(command line)", "member")
    done = depart(_root(app), slug, out, actor())
    app.out.print(f"{slug} departed on {done.departed_on}: {done.files} file(s) exported to "
                  f"{done.archive} (sha256 {done.sha256}); `coophost deploy` stops its logins, "
                  f"`coophost members purge` removes its services after {done.purge_after}")


@member.command("remove")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def member_remove(app: AppContext, slug: str, yes: bool) -> int:
    """Remove a member (its secrets are kept aside; the next deploy archives its data)."""
    from coophost.members.audit import actor, audit
    from coophost.registry.edit import read_member_text, remove_member

    read_member_text(_root(app), slug)
    if not yes and not click.confirm(f"remove member {slug}?", default=False):
        app.err.print("not removed")
        return EXIT_USAGE
    kept = remove_member(_root(app), slug)
    audit(_root(app), {"by": actor(), "action": "member removed", "member": slug,
                       **({"secrets_kept": str(kept.relative_to(_root(app)))} if kept else {})})
    app.out.print(f"removed {slug}; the next deploy moves its data on the hosts into the "
                  "co-op's archive (`coophost members purge` deletes it after the retention "
                  "period); run `coophost plan` to see what a deploy would remove")
    return 0


@member.command("move")
@click.argument("slug")
@click.argument("service")
@click.argument("host")
@click.option("--force", is_flag=True, help="Move even if the host lacks declared capacity.")
@pass_app
def member_move(app: AppContext, slug: str, service: str, host: str, force: bool) -> None:
    """Move one of a member's services to another host (recorded; applied by a deploy)."""
    from coophost.members.audit import actor
    from coophost.members.lifecycle import move

    if move(_root(app), slug, service, host, actor(), force) is None:
        app.out.print(f"{slug}/{service} is on {host} already: nothing changed")
        return
    app.out.print(f"{slug}/{service} placed on {host}")


# ---- service --------------------------------------------------------------------------------

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
                      f"{_escape(svc.description)}")
        for param in svc.parameters.values():
            limits = " ".join(x for x in (
                f"min {param.min}" if param.min is not None else "",
                f"max {param.max}" if param.max is not None else "",
                f"one of {'|'.join(param.choices)}" if param.choices else "") if x)
            app.out.print(f"  {param.name} ({param.type}; default {param.default!r}"
                          f"{'; ' + limits if limits else ''}): {_escape(param.description)}")
    for name in coming:
        app.out.print(f"[bold]{name}[/] (coming: no role deploys it yet, it cannot be enabled "
                      f"or requested): {_escape(services[name].description)}")


@service.command("enable")
@click.argument("slug")
@click.argument("service_name", metavar="SERVICE")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="A setting (repeatable); YAML values for lists, e.g. mailboxes='[a, b]'.")
@pass_app
def service_enable(app: AppContext, slug: str, service_name: str,
                   assignments: tuple[str, ...]) -> None:
    """Enable a service for a member (or change its settings) and place it on a host."""
    from coophost.registry.catalogue import load_catalogue
    from coophost.registry.edit import enable_service, parse_setting

    svc = load_catalogue().get(service_name)
    settings = dict(parse_setting(svc, a) for a in assignments)
    _, host = enable_service(_root(app), slug, service_name, settings)
    app.out.print(f"{slug}/{service_name} enabled, placed on {host}")


@service.command("disable")
@click.argument("slug")
@click.argument("service_name", metavar="SERVICE")
@pass_app
def service_disable(app: AppContext, slug: str, service_name: str) -> None:
    """Disable a member's service (the next deploy removes it)."""
    from coophost.registry.edit import disable_service

    disable_service(_root(app), slug, service_name)
    app.out.print(f"{slug}/{service_name} disabled")


# ---- secrets --------------------------------------------------------------------------------

@click.group()
def secrets() -> None:
    """Secrets (vault-encrypted at rest)."""


@secrets.command("show")
@click.argument("slug")
@click.argument("service_name", metavar="[SERVICE]", required=False)
@click.argument("name", required=False)
@json_option
@pass_app
def secrets_show(app: AppContext, slug: str, service_name: str | None, name: str | None,
                 as_json: bool) -> None:
    """Decrypt and print a member's secrets (the only command that ever prints one)."""
    from coophost.registry.catalogue import load_catalogue
    from coophost.registry.checks import suggest
    from coophost.registry.edit import member_path
    from coophost.registry.loader import load_coop, load_registry
    from coophost.secrets import SecretStore

    root = _root(app)
    member_path(root, slug)
    coop, _ = load_coop(root)
    store = SecretStore(root, coop.vault, load_catalogue())
    found = load_registry(root, need_hosts=False).registry.members.get(slug)
    if found is None:
        slugs = sorted(p.stem for p in (root / "members").glob("*.yml"))
        raise UsageError(f"no member {slug!r}", hint=suggest(slug, slugs))
    values = store.reveal(found.owner)
    if service_name is not None:
        if service_name not in values:
            raise UsageError(f"no secrets stored for {slug}/{service_name}",
                             hint=(f"{slug} has secrets for: {', '.join(sorted(values))}"
                                   if values else "secrets are generated by `coophost render` "
                                   "(or a deploy)"))
        values = {service_name: values[service_name]}
    if name is not None and service_name is not None:
        if name not in values[service_name]:
            raise UsageError(f"{slug}/{service_name} has no secret {name!r}",
                             hint="its secrets: " + ", ".join(sorted(values[service_name])))
        values = {service_name: {name: values[service_name][name]}}
    if not any(values.values()):
        raise UsageError(f"no secrets stored for {slug}",
                         hint="secrets are generated by `coophost render` (or a deploy)")
    if as_json:
        app.emit_json(values)
        return
    for svc, items in sorted(values.items()):
        for key, value in sorted(items.items()):
            click.echo(f"{svc}.{key}: {value}" if "\n" not in value
                       else f"{svc}.{key}:\n{value}")


commands: list[click.Command] = [init, member, service, secrets]
