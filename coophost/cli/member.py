"""`coophost member ...`: add, list, show, edit, suspend, resume, export, depart, remove, move."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import click

from coophost.cli.options import (
    AppContext,
    escape,
    json_option,
    name_argument,
    next_step,
    pass_app,
    table,
)
from coophost.errors import EXIT_USAGE, ConflictError, CoophostError, UsageError
from coophost.layout import STATE_DIR


@click.group()
def member() -> None:
    """Members: add, list, show, edit, suspend, resume, export, depart, remove, move."""


@member.command("add")
@name_argument("member", "slug")
@click.option("--name", required=True, help="Display name.")
@click.option("--contact", required=True, help="Contact email address.")
@click.option("--domain", "domains", multiple=True, help="A domain of the member (repeatable).")
@click.option("--ssh-key", "ssh_keys", multiple=True, help="An SSH public key line (repeatable).")
@pass_app
def member_add(app: AppContext, slug: str, name: str, contact: str, domains: tuple[str, ...],
               ssh_keys: tuple[str, ...]) -> None:
    """Register a new member (members/SLUG.yml)."""
    from coophost.lock import coop_lock
    from coophost.registry.edit import add_member, member_path
    from coophost.registry.loader import load_registry

    root = app.inventory
    member_path(root, slug)  # the slug is checked before anything is read
    with coop_lock(root, purpose=f"member add {slug}"):
        loaded = load_registry(root, need_hosts=False)
        path = add_member(root, loaded, slug, name, contact, list(domains), list(ssh_keys))
    app.out.print(f"added member {slug} ({escape(str(path))})")
    next_step(app, f"coophost service enable {slug} SERVICE")


@member.command("list")
@json_option
@pass_app
def member_list(app: AppContext, as_json: bool) -> None:
    """List members with their status, domains and services."""
    from coophost.registry.loader import load_registry

    members = load_registry(app.inventory, need_hosts=False).registry.members
    if as_json:
        app.emit_json([{"slug": m.slug, "name": m.name, "status": m.status,
                        "domains": [d.name for d in m.domains],
                        "services": sorted(m.services)} for m in members.values()])
        return
    table(app, ["member", "status", "services", "domains", "name"],
           [[m.slug, m.status, ",".join(sorted(m.services)) or "-",
             escape(",".join(d.name for d in m.domains)) or "-", escape(m.name)]
            for m in members.values()])


@member.command("show")
@name_argument("member", "slug")
@json_option
@pass_app
def member_show(app: AppContext, slug: str, as_json: bool) -> None:
    """Show one member's record, services (with defaults) and placement."""
    from coophost.registry.edit import read_member_text
    from coophost.registry.loader import load_registry

    read_member_text(app.inventory, slug)
    record = load_registry(app.inventory, need_hosts=False).registry.members[slug]
    data: dict[str, Any] = record.to_plain()
    data["domains"] = [d.name for d in record.domains]
    del data["file"]
    if as_json:
        app.emit_json(data)
        return
    from coophost.registry.yamlio import dump_plain

    shown: dict[str, Any] = {key: data[key] for key in ("slug", "name", "contact", "status")}
    shown["domains"] = data["domains"]
    shown["ssh_keys"] = len(record.ssh_keys)
    shown["services"] = {
        service: {"host": record.placement.get(service, "not placed yet"), **settings}
        for service, settings in sorted((data.get("services") or {}).items())}
    click.echo(dump_plain(shown), nl=False)


@member.command("edit")
@name_argument("member", "slug")
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
    from coophost.lock import coop_lock
    from coophost.registry import edit
    from coophost.registry.loader import load_registry

    root = app.inventory
    if any([name, contact, add_domain, remove_domain, add_ssh_key, remove_ssh_key]):
        with coop_lock(root, purpose=f"member edit {slug}"):
            loaded = load_registry(root, need_hosts=False)
            edit.edit_fields(root, loaded, slug, name=name, contact=contact,
                             add_domains=add_domain, remove_domains=remove_domain,
                             add_keys=add_ssh_key, remove_keys=remove_ssh_key)
        app.out.print(f"saved member {slug}")
        next_step(app, "coophost deploy")
        return
    original = edit.read_member_text(root, slug)
    edited = _run_editor(original, slug)
    if edited == original:
        app.out.print("no change")
        return
    try:  # the lock is taken once the editor is closed, never while it is open
        with coop_lock(root, purpose=f"member edit {slug}"):
            loaded = load_registry(root, need_hosts=False)
            edit.replace_member_text(root, loaded, slug, edited, original)
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
    next_step(app, "coophost deploy")


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
@name_argument("member", "slug")
@click.option("--why", default="", help="A note for the audit log.")
@pass_app
def member_suspend(app: AppContext, slug: str, why: str) -> None:
    """Suspend a member: no login works after the next deploy; the data stays.

    Mail keeps arriving, or bounces, as coop.yml's `suspended_mail` says.
    """
    from coophost.members.audit import actor
    from coophost.members.lifecycle import set_status

    if set_status(app.inventory, slug, "suspended", actor(), why) is None:
        app.out.print(f"{slug} is suspended already: nothing changed")
        return
    app.out.print(f"suspended {slug}: its logins stop at the next deploy")
    next_step(app, "coophost deploy")


@member.command("resume")
@name_argument("member", "slug")
@click.option("--why", default="", help="A note for the audit log.")
@pass_app
def member_resume(app: AppContext, slug: str, why: str) -> None:
    """Resume a suspended member (logins work again after the next deploy)."""
    from coophost.members.audit import actor
    from coophost.members.lifecycle import set_status

    if set_status(app.inventory, slug, "active", actor(), why) is None:
        app.out.print(f"{slug} is active already: nothing changed")
        return
    app.out.print(f"resumed {slug}: its logins work again after the next deploy")
    next_step(app, "coophost deploy")


@member.command("export")
@name_argument("member", "slug")
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
        export_member(app.inventory, slug, sys.stdout.buffer)
        return
    with atomic_stream(out) as handle:
        manifest = export_member(app.inventory, slug, handle)
    app.err.print(f"{out}: {len(manifest.files)} file(s) of {slug} from "
                  f"{len(manifest.sources)} source(s)")


@member.command("depart")
@name_argument("member", "slug")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Where the member's data archive goes (made first).")
@pass_app
def member_depart(app: AppContext, slug: str, out: Path) -> None:
    """A member leaves: export its data, stop its logins; services go after retention."""
    from coophost.members.audit import actor
    from coophost.members.lifecycle import depart
    from coophost.registry import checks

    checks.slug(slug, "(command line)", "member")
    done = depart(app.inventory, slug, out, actor())
    app.out.print(f"{slug} departed on {done.departed_on}: {done.files} file(s) exported to "
                  f"{done.archive} (sha256 {done.sha256}); the next deploy stops its logins, "
                  f"`coophost members purge` removes its services after {done.purge_after}; "
                  f"`coophost backup handover {slug} --out DIR` hands over its backups")
    next_step(app, "coophost deploy")


@member.command("remove")
@name_argument("member", "slug")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def member_remove(app: AppContext, slug: str, yes: bool) -> int:
    """Remove a member (its secrets are kept aside; the next deploy archives its data)."""
    from coophost.lock import coop_lock
    from coophost.members.audit import actor, audit
    from coophost.registry.edit import read_member_text, remove_member

    read_member_text(app.inventory, slug)
    if not yes and not click.confirm(f"remove member {slug}?", default=False):
        app.err.print("not removed")
        return EXIT_USAGE
    with coop_lock(app.inventory, purpose=f"member remove {slug}"):
        kept = remove_member(app.inventory, slug)
    audit(app.inventory, {"by": actor(), "action": "member removed", "member": slug,
                       **({"secrets_kept": str(kept.relative_to(app.inventory))} if kept else {})})
    app.out.print(f"removed {slug}; the next deploy moves its data on the hosts into the "
                  "co-op's archive (`coophost members purge` deletes it after the retention "
                  "period); `coophost plan` shows what a deploy would remove")
    next_step(app, "coophost deploy")
    return 0


@member.command("move")
@name_argument("member", "slug")
@name_argument("service")
@name_argument("host")
@click.option("--force", is_flag=True, help="Move even if the host lacks declared capacity.")
@click.option("--record-only", is_flag=True,
              help="Only record the move; the next deploy makes the unit there, empty.")
@json_option
@pass_app
def member_move(app: AppContext, slug: str, service: str, host: str, force: bool,
                record_only: bool, as_json: bool) -> int:
    """Move one of a member's services to another host, with its data.

    Records the move, deploys the new host and then the old one (which archives the unit and
    relays its mail to the new host until `members purge` forgets the move, after coop.yml's
    `retention.relay_days`, default 7), and copies the data across: a merge that keeps what
    the new host received meanwhile, each copied file compared by SHA-256. When the old host
    is out of reach the data comes from the unit's latest backup. Running the command again
    finishes a move that was interrupted. Exit 1 when a file did not arrive intact.
    """
    from coophost.members.audit import actor
    from coophost.members.carry import carry
    from coophost.members.lifecycle import move
    from coophost.registry.loader import load_registry

    moved = move(app.inventory, slug, service, host, actor(), force)
    if moved is None:
        member_ = load_registry(app.inventory, need_hosts=False).registry.members[slug]
        if record_only or service not in member_.moved:
            if not as_json:
                app.out.print(f"{slug}/{service} is on {host} already: nothing changed")
            else:
                app.emit_json({"member": slug, "service": service, "changed": False})
            return 0
        if not as_json:
            app.out.print(f"{slug}/{service} is placed on {host}: finishing its move from "
                          f"{member_.moved[service]['from']}")
    elif not as_json:
        app.out.print(f"{slug}/{service} placed on {host}")
    if record_only or (moved is not None and service not in moved.moved):
        if not as_json and moved is not None and service not in moved.moved:
            app.out.print("it was not placed before: the next deploy makes it there")
        if as_json:
            app.emit_json({"member": slug, "service": service, "changed": True,
                           "carried": False})
        else:
            next_step(app, "coophost deploy")
        return 0
    report = carry(app.inventory, slug, service,
                   (lambda line: None) if as_json else (lambda line: app.out.print(line)))
    if as_json:
        app.emit_json(report.as_dict())
        return 0 if report.ok else 1
    for copy in report.copies:
        state = "[red]FAILED[/]" if copy.problems else "ok"
        app.out.print(f"{copy.path}: {state}, {copy.files} file(s) copied ({copy.size} bytes "
                      f"streamed), {copy.kept} kept as the new host had them; from "
                      f"{escape(copy.source)}")
        for problem in copy.problems:
            app.err.print(f"  {escape(problem)}")
    if report.age_hours is not None:
        app.out.print(f"restored from backup {report.archive}, {report.age_hours} hours old")
    if report.error:
        app.err.print(f"[red]{escape(report.error)}[/]")
    if report.ok:
        app.out.print(f"{slug}/{service} is on {report.to_host} with its data; "
                      f"{report.from_host} relays what still arrives there; point DNS at "
                      f"{report.to_host}")
        next_step(app, "coophost dns check")
    else:
        next_step(app, f"coophost member move {slug} {service} {host} (again: it finishes "
                       "the move)")
    return 0 if report.ok else 1


commands: list[click.Command] = [member]
