"""`coophost lab ...`: the local lab of real Debian hosts in Docker."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from coophost.cli.options import (
    AppContext,
    complete_service,
    escape,
    json_option,
    name_argument,
    next_step,
    pass_app,
    table,
)
from coophost.errors import EXIT_PENDING, ConfigError, EnvironmentProblem

if TYPE_CHECKING:
    from coophost.lab.lab import Lab

name_option = click.option(
    "--name", default="lab", show_default=True,
    help="The lab's name; its inventory is inventories/NAME unless -i is given.")


def _lab(app: AppContext, name: str) -> Lab:
    from coophost.lab.lab import Lab  # cryptography and friends load only for lab commands

    inventory = app.inventory if app.inventory_given else Path("inventories") / name
    return Lab(name, inventory)


@click.group()
def lab() -> None:
    """A local lab co-op: systemd Debian hosts in Docker, lab DNS and a lab ACME CA."""


@lab.command()
@name_option
@click.option("--hosts", type=int, default=None,
              help="How many service hosts [default: 3 for a new lab, else the current count].")
@click.option("--backup-hosts", type=int, default=None,
              help="How many backup hosts (group backup) [default: 1 for a new lab, else the "
                   "current count].")
@click.option("--workers", type=int, default=None,
              help="How many execution nodes w1..wN (group coophost_workers, each serving "
                   "every host) [default: none for a new lab, else the current count].")
@click.option("--worker-transport", type=click.Choice(["ssh", "receptor"]), default=None,
              help="How jobs reach the workers: ssh (sshd alone) or receptor (a systemd "
                   "container running receptor) [default: the workers' current one, else ssh].")
@click.option("--mirror", envvar="COOPHOST_DEBIAN_MIRROR",
              help="Debian mirror for the base image [default: the one apt uses here].")
@json_option
@pass_app
def up(app: AppContext, name: str, hosts: int | None, backup_hosts: int | None,
       workers: int | None, worker_transport: str | None, mirror: str | None,
       as_json: bool) -> None:
    """Build (once) the base image and bring the lab up; running it again changes nothing."""
    the_lab = _lab(app, name)

    def say(msg: str) -> None:
        if not as_json:
            app.err.print(f"[dim]lab[/] {msg}")

    state = the_lab.up(hosts, mirror, progress=say, backup_hosts=backup_hosts,
                       workers=workers, worker_transport=worker_transport)
    from coophost.lab.memberkeys import ensure_member_keys

    for slug in ensure_member_keys(the_lab.workdir, the_lab.inventory):
        say(f"member {slug}: the lab's key for it registered in members/{slug}.yml")
    if as_json:
        app.emit_json(the_lab.status())
        return
    for host in state.hosts:
        app.out.print(f"{host.name}  {host.fqdn}  ssh 127.0.0.1:{host.ssh_port}  {host.ip}")
    app.out.print(f"inventory: {the_lab.inventory}/hosts.yml  (try: ansible -i "
                  f"{the_lab.inventory}/hosts.yml all -m ping)")
    next_step(app, f"coophost -i {the_lab.inventory} deploy")


@lab.command()
@name_option
@json_option
@pass_app
def status(app: AppContext, name: str, as_json: bool) -> None:
    """Show the lab's containers, their state and ports."""
    info = _lab(app, name).status()
    if as_json:
        app.emit_json(info)
        return
    if not info["containers"]:
        app.out.print(f"lab {name}: not running")
        return
    columns = ["container", "role", "state", "ip", "ssh"]
    table(app, columns, [[str(row.get(c, "")) for c in columns] for row in info["containers"]],
          title=f"lab {name}  ({info['network']})")


@lab.command(context_settings={"ignore_unknown_options": True})
@name_option
@name_argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_app
def ssh(app: AppContext, name: str, host: str, command: tuple[str, ...]) -> None:
    """Open an SSH session to a lab host (or run COMMAND there), host key pinned."""
    the_lab = _lab(app, name)
    state = the_lab.load_state()
    found = [h for h in state.hosts if h.name == host] if state else []
    if not found:
        known = ", ".join(h.name for h in state.hosts) if state else "none: run `lab up`"
        raise ConfigError(f"lab {name}: no host {host!r} (hosts: {known})")
    exe = shutil.which("ssh")
    if exe is None:
        raise EnvironmentProblem("no `ssh` client", hint="apt-get install -y openssh-client")
    argv = [exe, "-i", str(the_lab.key_file), "-p", str(found[0].ssh_port),
            "-o", f"UserKnownHostsFile={the_lab.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes", f"{the_lab.recipe.user}@127.0.0.1", *command]
    os.execv(exe, argv)  # noqa: S606 - replaces coophost with ssh, argument list only


@lab.command()
@name_option
@json_option
@pass_app
def down(app: AppContext, name: str, as_json: bool) -> None:
    """Remove the lab's containers, network, volumes and generated files; nothing else.

    The keys `lab up` registered for members (to play them) are taken out of their records.
    """
    the_lab = _lab(app, name)
    from coophost.lab.memberkeys import forget_member_keys

    for slug in forget_member_keys(the_lab.workdir, the_lab.inventory):
        if not as_json:
            app.err.print(f"[dim]lab[/] member {slug}: the lab's key for it removed from "
                          f"members/{slug}.yml")
    removed = the_lab.down()
    if as_json:
        app.emit_json(removed)
    else:
        app.out.print(f"lab {name} removed: " + ", ".join(f"{v} {k}" for k, v in removed.items()))


@lab.group("dns")
def lab_dns() -> None:
    """The lab DNS server's records."""


@lab_dns.command("sync")
@name_option
@json_option
@pass_app
def dns_sync(app: AppContext, name: str, as_json: bool) -> None:
    """Serve every record of `coophost dns records` from the lab DNS (MX, SPF, DKIM, DMARC).

    The records come from the co-op's registry (-i, default inventories/NAME); the lab's own
    host names stay in its hosts file. Restarts the DNS container only when records changed.
    """
    from coophost.dns.ops import dnsmasq_config, expected_records

    the_lab = _lab(app, name)
    found = expected_records(the_lab.inventory)
    config = dnsmasq_config(found.records, the_lab.served_names())
    changed = the_lab.sync_records(config)
    if as_json:
        app.emit_json({"records": len(found.records), "changed": changed, "notes": found.notes})
        return
    for note in found.notes:
        app.err.print(f"note: {note}")
    app.out.print(f"lab {name} DNS: {len(found.records)} records "
                  f"{'loaded' if changed else 'already served'}")


@lab.command("mail-check")
@name_option
@click.option("--from", "sender", metavar="ADDRESS",
              help="Send as this mailbox [default: the first member's first mailbox].")
@click.option("--to", "recipient", metavar="ADDRESS",
              help="To this mailbox [default: another member's, on another host].")
@click.option("--timeout", type=click.FloatRange(1, 600), default=90.0, show_default=True,
              help="Seconds to wait for delivery.")
@json_option
@pass_app
def mail_check(app: AppContext, name: str, sender: str | None, recipient: str | None,
               timeout: float, as_json: bool) -> int:
    """Prove mail between members: submit, deliver to another host, read back, verify.

    Submits over 587 with STARTTLS and authentication, reads the message over IMAPS on the
    recipient's host (certificates verified against the lab ACME CA), verifies its DKIM
    signature against the key the lab DNS publishes (run `lab dns sync` first), and checks
    that the hosts spoke TLS to each other. Exits 1 when a check fails.
    """
    from coophost.lab.mailcheck import prove

    first, second, result = prove(_lab(app, name), sender, recipient, timeout)
    if as_json:
        app.emit_json({"from": first.mailbox.address, "from_host": first.host,
                       "to": second.mailbox.address, "to_host": second.host, "ok": result.ok,
                       "checks": [c.as_json() for c in result.checks]})
    else:
        app.out.print(f"mail check: {first.mailbox.address} ({first.member}, {first.host}) -> "
                      f"{second.mailbox.address} ({second.member}, {second.host})")
        _print_checks(app, result.checks)
    return 0 if result.ok else EXIT_PENDING


@lab.command("artifact")
@name_option
@json_option
@pass_app
def artifact(app: AppContext, name: str, as_json: bool) -> int:
    """Make, sign and fetch the lab's own release, to prove the artifact path here.

    No upstream release server is reachable from this machine, so the lab makes a release
    (`lab-release` 1.0), signs it with a lab key, and `artifacts fetch` downloads it over HTTP
    on 127.0.0.1, checks its signature and SHA-256 and stores it. Then `coophost deploy` has
    the mirror serve it and `coophost artifacts probe HOST lab-release --ca-file ...` has a
    host fetch and check it. Exit 1 when the fetch refused it.
    """
    from coophost.lab.artifacts import lab_release
    from coophost.lab.mailcheck import acme_roots, lab_state

    the_lab = _lab(app, name)
    done = lab_release(the_lab.inventory, acme_roots(the_lab, lab_state(the_lab)))
    probe = (f"coophost -i {the_lab.inventory} artifacts probe HOST {done.name} "
             f"--ca-file {done.ca_file}")
    if as_json:
        app.emit_json({"name": done.name, "version": done.version, "sha256": done.sha256,
                       "signer": done.signer, "status": done.status, "problems": done.problems,
                       "ca_file": str(done.ca_file)})
    elif done.status in ("fetched", "stored"):
        app.out.print(f"{done.name} {done.version}: made, signed by the lab key {done.signer}, "
                      f"{done.status} and verified (SHA-256 {done.sha256[:16]}...)")
        app.out.print("The real Nextcloud archive is not fetched here: this machine reaches no "
                      "upstream release server (download.nextcloud.com, github.com). On a "
                      "co-op's controller `coophost artifacts fetch nextcloud` takes the same "
                      "path.")
        next_step(app, f"coophost deploy, then {probe}")
    else:
        app.err.print(f"[red]{done.name} {done.version}: {done.status}[/]")
        for problem in done.problems:
            app.err.print(f"  {escape(problem)}")
    return 0 if done.status in ("fetched", "stored") else EXIT_PENDING


@lab.command("probe")
@name_option
@click.option("--service", "services", multiple=True, metavar="SERVICE",
              shell_complete=complete_service,
              help="Only this service's probe (repeatable) [default: every available service].")
@click.option("--timeout", type=click.FloatRange(1, 600), default=90.0, show_default=True,
              help="Seconds each probe may wait (e.g. for a delivery).")
@json_option
@pass_app
def probe(app: AppContext, name: str, services: tuple[str, ...], timeout: float,
          as_json: bool) -> int:
    """Prove each available service end to end on the lab, with the service's own probe.

    Each service's hooks say what its probe does (mail: a message between members on two
    hosts, delivered, DKIM-signed, over TLS); a service without a probe is listed as such.
    Exits 1 when a check fails.
    """
    from coophost.registry.catalogue import load_catalogue
    from coophost.services import probes

    catalogue = load_catalogue()
    for service_name in services:
        catalogue.get(service_name, "(command line)", "--service")
    the_lab = _lab(app, name)
    report: dict[str, object] = {}
    ok = True
    for service_name, hooks in probes(catalogue).items():
        if services and service_name not in services:
            continue
        result = hooks.probe(the_lab, timeout)
        if result is None:
            report[service_name] = None
            if not as_json:
                app.out.print(f"{service_name}: no end-to-end probe")
            continue
        ok = ok and result.ok
        report[service_name] = {"summary": result.summary, "ok": result.ok,
                                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail}
                                           for c in result.checks]}
        if not as_json:
            app.out.print(escape(result.summary))
            _print_checks(app, result.checks)
    if as_json:
        app.emit_json({"ok": ok, "services": report})
    return 0 if ok else EXIT_PENDING


def _print_checks(app: AppContext, checks: Iterable[Any]) -> None:
    """One line per check of a probe (anything with name, ok, detail): ok or FAIL, and why."""
    for check in checks:
        mark = "[green]ok[/]  " if check.ok else "[red]FAIL[/]"
        app.out.print(f"  {mark} {escape(check.name)}: {escape(check.detail)}")


commands = [lab]
