"""`coophost drift`: do the hosts still hold what was applied (a check-mode run)."""

from __future__ import annotations

import threading

import click

from coophost.cli.options import AppContext, json_option, name_option, pass_app


@click.command("drift")
@name_option("host", "Only this host (repeatable).", dest="hosts", multiple=True)
@click.option("--mitogen/--no-mitogen", default=None,
              help="Run the check with mitogen's strategy [default: on when installed].")
@json_option
@pass_app
def drift(app: AppContext, hosts: tuple[str, ...], mitogen: bool | None, as_json: bool) -> int:
    """Check hosts against what was last applied (check mode: nothing changes); exit 1 on drift."""
    from coophost.deploy.drift import drift as run_drift
    from coophost.deploy.executor import mitogen_available
    from coophost.deploy.progress import PlainProgress, SilentProgress

    progress = SilentProgress() if as_json else PlainProgress(app.out)
    found, code = run_drift(app.inventory, frozenset(hosts), progress, threading.Event(),
                            mitogen=mitogen_available() if mitogen is None else mitogen)
    if as_json:
        app.emit_json({"exit_code": code, "hosts": [f.as_dict() for f in found]})
        return code
    for verdict in found:
        colour = {"ok": "green", "pending": "yellow"}.get(verdict.status, "red")
        app.out.print(f"[{colour}]{verdict.status:<11}[/] {verdict.host}"
                      + (f"  {verdict.detail}" if verdict.detail else ""))
    return code


commands: list[click.Command] = [drift]
