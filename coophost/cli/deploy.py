"""`coophost deploy`: apply the registry to the hosts that need it."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from coophost.cli.options import (
    AppContext,
    json_option,
    name_option,
    next_step,
    pass_app,
    stdout_is_terminal,
)
from coophost.errors import EXIT_OK, UsageError


@click.command()
@name_option("member", "Only hosts where this member's units change (repeatable).",
             dest="members", multiple=True)
@name_option("host", "Only this host (repeatable).", dest="hosts", multiple=True)
@name_option("service", "Only hosts where this service's units change (repeatable).",
             dest="services", multiple=True)
@click.option("--parallel", type=click.IntRange(1, 256),
              help="Hosts at once [default: every host, up to twice the cores]; below the "
                   "number of hosts, one job per host, N at a time.")
@click.option("--check", is_flag=True, help="Ansible check mode: change neither hosts nor state.")
@click.option("--diff", is_flag=True, help="Show each host's differences (with --check).")
@click.option("--resume", is_flag=True,
              help="Rerun only the hosts that failed or were not reached in the last run.")
@click.option("--all", "everything", is_flag=True, help="Reapply every host, changed or not.")
@click.option("--full", is_flag=True,
              help="Never the fast path: run the whole site playbook on every host it deploys.")
@click.option("--wait", is_flag=True, help="Wait for another deploy to finish instead of exit 3.")
@click.option("--mode", type=click.Choice(["batch", "per-host"]), default="batch",
              show_default=True,
              help="One ansible-runner job over all hosts (each recorded as it converges), "
                   "or one job per host.")
@click.option("--mitogen/--no-mitogen", default=None,
              help="Run plays with mitogen's strategy [default: on when mitogen is installed].")
@click.option("--local", is_flag=True,
              help="Run every host's job on this controller, even those workers serve.")
@json_option
@pass_app
def deploy(app: AppContext, members: tuple[str, ...], hosts: tuple[str, ...],
           services: tuple[str, ...], parallel: int | None, check: bool, diff: bool,
           resume: bool, everything: bool, full: bool, wait: bool, mode: str,
           mitogen: bool | None, local: bool, as_json: bool) -> int:
    """Apply what changed: the plan's hosts, concurrently; exit 1 failed, 4 unreachable."""
    from coophost.deploy.engine import DeployOptions
    from coophost.deploy.engine import deploy as run_deploy
    from coophost.deploy.executor import mitogen_available
    from coophost.deploy.jobs import Selection
    from coophost.deploy.progress import (
        LiveProgress,
        PlainProgress,
        SilentProgress,
        summary_table,
    )
    from coophost.deploy.tasks import check_report

    if resume and everything:
        raise UsageError("--resume and --all exclude each other")
    if diff and not check:
        raise UsageError("--diff shows what --check would change: use both")
    if mitogen and not mitogen_available():
        raise UsageError("--mitogen needs mitogen: pip install 'coophost[fast]'")
    if mitogen is None:  # measured 2.4x faster than tuned ansible-playbook: docs/deploy-engine.md
        mitogen = mitogen_available()
    options = DeployOptions(
        selection=Selection(frozenset(members), frozenset(hosts), frozenset(services),
                            everything, resume, full),
        parallel=parallel, check=check, wait=wait, mode=mode, mitogen=mitogen, local=local)
    progress: SilentProgress | PlainProgress | LiveProgress
    if as_json:
        progress = SilentProgress()
    elif stdout_is_terminal():
        progress = LiveProgress(app.out)
    else:
        progress = PlainProgress(app.out)
    cancel = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not as_json:
            app.err.print(f"[yellow]{signal.Signals(signum).name}: canceling running jobs[/]")
        cancel.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = run_deploy(app.inventory, options, progress, cancel)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if isinstance(progress, LiveProgress):
            progress.stop()
    if as_json:
        app.emit_json({
            "run": result.run_id, "check": check, "exit_code": result.exit_code,
            "hosts": {h: {"status": o.status, **o.counts, "summary": o.summary,
                          "units": result.jobs[h].unit_names, "reasons": result.jobs[h].reasons,
                          "path": result.jobs[h].path, "why": result.jobs[h].why,
                          "tasks": [t.stored() | ({"diff": t.diff} if diff else {})
                                    for t in o.tasks],
                          "tasks_omitted": o.tasks_omitted}
                      for h, o in sorted(result.outcomes.items())},
            "members": result.by_member()})
        return result.exit_code
    if not result.jobs:
        app.out.print("Nothing to deploy: the registry matches what was last applied "
                      "(hosts were not contacted; `coophost drift` checks them).")
        return EXIT_OK
    if diff:
        for host, outcome in sorted(result.outcomes.items()):
            app.out.rule(f"{host}: what --check would change")
            click.echo(check_report(outcome.tasks, outcome.tasks_omitted))
    title = f"run {result.run_id}" if result.run_id else "check (nothing recorded)"
    app.out.print(summary_table(result.outcomes, title, result.jobs))
    for member, units in result.by_member().items():
        app.out.print(f"{member}: " + ", ".join(f"{s} {st}" for s, st in sorted(units.items())))
    for host, outcome in sorted(result.outcomes.items()):
        if outcome.status != "ok" and outcome.summary:
            app.err.print(f"[red]{host}[/]: {outcome.summary}")
    if not result.run_id:  # a --check run changed nothing
        next_step(app, "coophost deploy")
    elif result.exit_code == EXIT_OK:
        next_step(app, "coophost dns check")
    else:
        next_step(app, f"coophost runs show {result.run_id}")
    return result.exit_code


commands: list[click.Command] = [deploy]
