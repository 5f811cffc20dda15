"""`coophost deploy` and `coophost runs`."""

from __future__ import annotations

import datetime as dt
import signal
import threading
from types import FrameType

import click

from coophost.cli.options import AppContext, json_option, pass_app, stdout_is_terminal
from coophost.errors import EXIT_OK, UsageError


@click.command()
@click.option("--member", "members", multiple=True, metavar="MEMBER",
              help="Only hosts where this member's units change (repeatable).")
@click.option("--host", "hosts", multiple=True, metavar="HOST", help="Only this host (repeatable).")
@click.option("--service", "services", multiple=True, metavar="SERVICE",
              help="Only hosts where this service's units change (repeatable).")
@click.option("--parallel", type=click.IntRange(1, 256),
              help="Hosts at once [default: every host, up to twice the cores].")
@click.option("--check", is_flag=True, help="Ansible check mode: change neither hosts nor state.")
@click.option("--diff", is_flag=True, help="Show each host's differences (with --check).")
@click.option("--resume", is_flag=True,
              help="Rerun only the hosts that failed or were not reached in the last run.")
@click.option("--all", "everything", is_flag=True, help="Reapply every host, changed or not.")
@click.option("--wait", is_flag=True, help="Wait for another deploy to finish instead of exit 3.")
@click.option("--mode", type=click.Choice(["per-host", "batch"]), default="per-host",
              show_default=True, help="One ansible-runner job per host, or one over all hosts.")
@click.option("--mitogen/--no-mitogen", default=None,
              help="Run plays with mitogen's strategy [default: on when mitogen is installed].")
@json_option
@pass_app
def deploy(app: AppContext, members: tuple[str, ...], hosts: tuple[str, ...],
           services: tuple[str, ...], parallel: int | None, check: bool, diff: bool,
           resume: bool, everything: bool, wait: bool, mode: str, mitogen: bool | None,
           as_json: bool) -> int:
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
                            everything, resume),
        parallel=parallel, check=check, wait=wait, mode=mode, mitogen=mitogen)
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
                          "units": result.jobs[h].unit_names, "reasons": result.jobs[h].reasons}
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
            click.echo(outcome.output)
    title = f"run {result.run_id}" if result.run_id else "check (nothing recorded)"
    app.out.print(summary_table(result.outcomes, title))
    for member, units in result.by_member().items():
        app.out.print(f"{member}: " + ", ".join(f"{s} {st}" for s, st in sorted(units.items())))
    for host, outcome in sorted(result.outcomes.items()):
        if outcome.status != "ok" and outcome.summary:
            app.err.print(f"[red]{host}[/]: {outcome.summary}")
    return result.exit_code


@click.group()
def runs() -> None:
    """Deploy runs recorded in state.db."""


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


@runs.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@json_option
@pass_app
def list_runs(app: AppContext, limit: int, as_json: bool) -> None:
    """List recent runs, newest first."""
    from dataclasses import asdict

    from rich.table import Table

    from coophost.deploy.records import RunLog
    from coophost.state import StateDB

    with StateDB(app.inventory) as db:
        records = RunLog(db).runs(limit)
    if as_json:
        app.emit_json([{k: v for k, v in asdict(r).items() if k != "jobs"}
                       | {"hosts": {j.host: j.status for j in r.jobs}} for r in records])
        return
    table = Table(title="runs")
    for column in ("run", "started", "took", "status", "hosts", "by"):
        table.add_column(column)
    for r in records:
        took = f"{r.finished_at - r.started_at:.1f}s" if r.finished_at else ""
        counts: dict[str, int] = {}
        for job in r.jobs:
            counts[job.status] = counts.get(job.status, 0) + 1
        table.add_row(str(r.id), _when(r.started_at), took, r.status,
                      ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), r.user)
    app.out.print(table)


@runs.command("show")
@click.argument("run_id", type=int, metavar="RUN")
@json_option
@pass_app
def show_run(app: AppContext, run_id: int, as_json: bool) -> None:
    """Show one run: each host's job, its counters, units and failures."""
    from dataclasses import asdict

    from rich.table import Table

    from coophost.deploy.records import RunLog
    from coophost.state import StateDB

    with StateDB(app.inventory) as db:
        record = RunLog(db).run(run_id)
    if record is None:
        raise UsageError(f"no run {run_id}")
    if as_json:
        app.emit_json(asdict(record))
        return
    app.out.print(f"run {record.id}: {record.status}, started {_when(record.started_at)} "
                  f"by {record.user}, options {record.options}")
    table = Table()
    for column in ("host", "status", "ok", "changed", "failed", "unreachable", "units"):
        table.add_column(column)
    for job in record.jobs:
        table.add_row(job.host, job.status, str(job.ok), str(job.changed), str(job.failed),
                      str(job.unreachable), ", ".join(job.units))
    app.out.print(table)
    for job in record.jobs:
        if job.summary:
            app.out.print(f"{job.host}: {job.summary}")


@click.command("drift")
@click.option("--host", "hosts", multiple=True, metavar="HOST", help="Only this host (repeatable).")
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


commands: list[click.Command] = [deploy, runs, drift]
