"""`coophost host check|add|list|remove`: the co-op's hosts (hosts.yml, reachability, keys)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click

from coophost.cli.options import AppContext, escape, json_option, next_step, pass_app, table
from coophost.enrol.plan import HEADROOM_HELP
from coophost.errors import EXIT_OK, EXIT_PENDING, EXIT_UNREACHABLE, EXIT_USAGE


@click.group()
def host() -> None:
    """The co-op's hosts: enrol, register, list, remove, and preflight checks."""


@host.command()
@click.argument("names", nargs=-1, metavar="[HOST]...")
@json_option
@pass_app
def check(app: AppContext, names: tuple[str, ...], as_json: bool) -> int:
    """Check hosts over SSH: reachable, pinned key, python3, sudo, disk, memory, OS.

    Exit 4 when a host is unreachable or its key does not match the pinned one, 1 when a
    reachable host fails a check.
    """
    from coophost.layout import KNOWN_HOSTS_FILE
    from coophost.registry.hosts import load_hosts
    from coophost.ssh import preflight  # paramiko is slow to import: only when checking

    hosts = load_hosts(app.inventory)
    if names:
        unknown = sorted(set(names) - {h.name for h in hosts})
        if unknown:
            from coophost.registry.checks import no_host

            raise no_host(unknown[0], [h.name for h in hosts])
        hosts = [h for h in hosts if h.name in names]
    known_hosts = app.inventory / KNOWN_HOSTS_FILE
    with ThreadPoolExecutor(max_workers=min(16, len(hosts) or 1)) as pool:
        reports = list(pool.map(lambda h: preflight(h, known_hosts), hosts))
    if as_json:
        app.emit_json([r.as_dict() for r in reports])
    else:
        table(app, ["host", "ok", "key", "os", "python", "priv", "disk free", "mem free"],
              [[r.host, "yes" if r.ok else "[red]no[/]", r.host_key, escape(r.os),
                escape(r.python), r.privilege, f"{r.disk_free_gb:.0f} GB",
                f"{r.mem_available_mb} MB"] for r in reports])
        for report in reports:
            if report.error:
                app.err.print(f"[red]{report.host}[/]: {report.error}")
    if any(not r.reachable or r.host_key != "ok" for r in reports):
        return EXIT_UNREACHABLE
    return EXIT_OK if all(r.ok for r in reports) else EXIT_PENDING


def _service_groups() -> list[str]:
    """The host groups the catalogue's services run on (for completion)."""
    from coophost.registry.catalogue import load_catalogue

    return sorted({service.group for service in load_catalogue().services.values()})


@host.command("add")
@click.argument("name")
@click.option("--address", required=True, help="Address to reach it over SSH (ansible_host).")
@click.option("--port", default=22, show_default=True, type=click.IntRange(1, 65535))
@click.option("--fqdn", help="Its public name (coophost_fqdn).")
@click.option("--ram-mb", required=True, type=click.IntRange(1), help="Declared RAM, MB.")
@click.option("--disk-gb", required=True, type=click.IntRange(1), help="Declared disk, GB.")
@click.option("--group", "groups", multiple=True,
              shell_complete=lambda _ctx, _param, incomplete: [
                  g for g in _service_groups() if g.startswith(incomplete)],
              help="A service group it serves (repeatable): a group of the catalogue's "
                   "services, see `coophost service list`.")
@pass_app
def add(app: AppContext, name: str, address: str, port: int, fqdn: str | None, ram_mb: int,
        disk_gb: int, groups: tuple[str, ...]) -> None:
    """Add a host to hosts.yml by hand (pin its key yourself; `host enrol` does it all)."""
    from coophost.lock import coop_lock
    from coophost.registry.catalogue import load_catalogue
    from coophost.registry.edit import add_host, check_new_host
    from coophost.registry.loader import load_registry

    check_new_host(load_catalogue(), name, groups)  # before anything is read
    with coop_lock(app.inventory, purpose=f"host add {name}"):
        loaded = load_registry(app.inventory, need_hosts=False)
        add_host(app.inventory, loaded, name, address=address, port=port, fqdn=fqdn,
                 ram_mb=ram_mb, disk_gb=disk_gb, groups=groups)
    app.out.print(f"added host {name}")
    next_step(app, f"coophost host check {name}")


@host.command("enrol")
@click.argument("name")
@click.option("--address", required=True, help="Address to reach it over SSH (ansible_host).")
@click.option("--port", default=22, show_default=True, type=click.IntRange(1, 65535))
@click.option("--user", default="root", show_default=True,
              help="The bootstrap account to log in with once (root, or a sysadmin's account "
                   "with sudo).")
@click.option("--identity", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="The bootstrap account's private key [default: the SSH agent, else a "
                   "password: env COOPHOST_BOOTSTRAP_PASSWORD or asked for].")
@click.option("--fingerprint", metavar="SHA256:...",
              help="The host key's fingerprint as read on its console (`ssh-keygen -lf "
                   "/etc/ssh/ssh_host_ed25519_key.pub`); without it, the key is shown and you "
                   "are asked.")
@click.option("--fqdn", help="Its public name (coophost_fqdn).")
@click.option("--group", "groups", multiple=True,
              shell_complete=lambda _ctx, _param, incomplete: [
                  g for g in _service_groups() if g.startswith(incomplete)],
              help="A service group it serves (repeatable).")
@json_option
@pass_app
def enrol(app: AppContext, name: str, address: str, port: int, user: str,
          identity: Path | None, fingerprint: str | None, fqdn: str | None,
          groups: tuple[str, ...], as_json: bool) -> int:
    """Take a freshly installed Debian host into the co-op.

    Reads the host key before logging in and pins it only when it equals --fingerprint (or
    you confirm it); a key other than that one, or than the one already pinned, is refused
    (exit 4) with nothing written. Then logs in once with the bootstrap account (its key, or
    a password that is never shown nor logged), makes the admin account hosts.yml names
    (ansible_user) with the controller's key and sudo without password, proves that account
    works, and only then turns password and root logins off. Finally pins the key in
    known_hosts, runs `host check`'s preflight and adds the host to hosts.yml with the
    capacity read from the machine less headroom: HEADROOM.

    Enrolling an enrolled host again changes nothing (exit 0). Exit 1 when the preflight
    fails (the key stays pinned, hosts.yml is not written).
    """
    import os

    from coophost.cli import options
    from coophost.enrol import plan
    from coophost.enrol.run import Request
    from coophost.enrol.run import enrol as run_enrol
    from coophost.errors import UsageError

    interactive = options.stdin_is_terminal()

    def confirm(key_type: str, found: str) -> bool:
        if not interactive:
            raise UsageError(f"{name}: the host offers {key_type} {found}; stdin is not a "
                             "terminal to confirm it: nothing written",
                             hint="give --fingerprint as read on the host's console")
        app.err.print(f"{escape(name)} ({escape(address)}:{port}) offers {key_type} {found}")
        return click.confirm("is this the fingerprint shown on the host's console "
                             "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)?",
                             default=False, err=True)

    def ask_password() -> str | None:
        if not interactive:
            return None
        answer: str = click.prompt(f"password of {user} on {name}", hide_input=True,
                                   err=True)
        return answer

    request = Request(name=name, address=address, port=port, user=user,
                      fingerprint=fingerprint, groups=groups, fqdn=fqdn, identity=identity)
    result = run_enrol(app.inventory, request, password=os.environ.get(plan.PASSWORD_ENV) or None,
                       confirm=confirm, ask_password=ask_password,
                       say=(lambda _line: None) if as_json else
                       (lambda line: app.err.print(escape(line))))
    report = result.report
    if as_json:
        app.emit_json(result.as_dict())
    else:
        if report is None or not report.ok:
            listed = "not added to hosts.yml"
        elif result.registered:
            listed = (f"added to hosts.yml with {result.capacity['ram_mb']} MB RAM and "
                      f"{result.capacity['disk_gb']} GB disk")
        else:
            listed = "already in hosts.yml"
        app.out.print(f"{name}: account {result.account}; sshd {result.sshd}; key "
                      f"{'pinned' if result.pinned else 'already pinned'}; {listed}")
        if not result.changed:
            app.out.print(f"{name} was enrolled already: nothing changed")
        if report and report.error:
            app.err.print(f"[red]{name}[/]: {escape(report.error)}")
    if report is None or not report.ok:
        if not as_json:
            app.err.print(f"[red]{name}[/]: the preflight check failed; see "
                          f"`coophost host check {name}`")
        return EXIT_PENDING
    if not as_json and result.changed:
        next_step(app, "coophost deploy")
    return EXIT_OK


enrol.help = (enrol.help or "").replace("HEADROOM.", f"{HEADROOM_HELP}.")


@host.command("list")
@json_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """List hosts with their groups, declared capacity, and what placed units use."""
    from coophost.desired.units import compute

    desired = compute(app.inventory)
    hosts = desired.hosts
    usage = desired.placement.usage
    count = {h: 0 for h in hosts}
    for unit in desired.units.values():
        count[unit.host] += 1
    rows: list[dict[str, Any]] = [
        {"host": h.name, "fqdn": h.fqdn, "groups": list(h.groups), "capacity": h.capacity,
         "used": usage.get(h.name, {}), "units": count[h.name]} for h in hosts.values()]
    if as_json:
        app.emit_json(rows)
        return
    shown = []
    for row in rows:
        used, cap = row["used"], row["capacity"]
        shown.append([str(row["host"]), ",".join(row["groups"]) or "-", str(row["units"]),
                      f"{used.get('ram_mb', 0)}/{cap['ram_mb']}",
                      f"{used.get('disk_gb', 0)}/{cap['disk_gb']}"])
    table(app, ["host", "groups", "units", "RAM MB used/declared", "disk GB used/declared"],
          shown)


@host.command("remove")
@click.argument("name")
@pass_app
def remove(app: AppContext, name: str) -> None:
    """Remove a host from hosts.yml (refused while units are placed or applied on it)."""
    from coophost.lock import coop_lock
    from coophost.registry.edit import remove_host
    from coophost.registry.loader import load_registry
    from coophost.state import StateDB

    with coop_lock(app.inventory, purpose=f"host remove {name}"):
        with StateDB(app.inventory) as state:
            applied = sum(1 for h, _, _ in state.applied().units if h == name)
        remove_host(app.inventory, load_registry(app.inventory, need_hosts=False), name,
                    applied)
    app.out.print(f"removed host {name}")
    next_step(app, "coophost deploy")


@host.command("evacuate")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_app
def evacuate(app: AppContext, name: str, yes: bool, as_json: bool) -> int:
    """Re-place every unit of a dead host and restore each from its latest backup.

    Each unit goes to another host of its group with room (recorded in the member files),
    those hosts are deployed, and the unit's latest archive is restored there, checked file by
    file against its manifest. The report says how old each unit's restored data is. The dead
    host is not contacted. Exit 1 when a unit could not be brought back whole.
    """
    from coophost.members.audit import actor
    from coophost.members.carry import evacuate as run_evacuate

    if not yes and not as_json and not click.confirm(
            f"re-place every unit of {name} and restore them from backups?", default=False):
        app.err.print("nothing done")
        return EXIT_USAGE
    result = run_evacuate(app.inventory, name, actor(),
                          (lambda line: None) if as_json else (lambda line: app.out.print(line)))
    if as_json:
        app.emit_json(result.as_dict())
        return 0 if result.ok else 1
    if not result.units:
        app.out.print(f"{name} holds no unit: nothing to evacuate")
    for unit in result.units:
        age = f"{unit.age_hours} hours old" if unit.age_hours is not None else "no backup"
        files = sum(c.files for c in unit.copies)
        state = "ok" if unit.ok else "[red]FAILED[/]"
        app.out.print(f"{unit.member}/{unit.service}: {state} on {unit.to_host}, {files} file(s) "
                      f"from {escape(unit.archive or '-')} ({age})")
        if unit.error:
            app.err.print(f"  {escape(unit.error)}")
        for copy in unit.copies:
            for problem in copy.problems:
                app.err.print(f"  {escape(problem)}")
    if result.deploy_error:
        app.err.print(f"[red]deploy: {escape(result.deploy_error)}[/]")
    if result.ok and result.units:
        app.out.print(f"every unit of {name} is back; point DNS at the new hosts; "
                      f"`coophost host remove {name}` once it is gone for good")
        next_step(app, "coophost dns check")
    return 0 if result.ok else 1


commands: list[click.Command] = [host]
