"""`coophost runs list|show`: the deploy runs recorded in state.db."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from coophost.cli.options import AppContext, escape, json_option, pass_app, table
from coophost.errors import UsageError
from coophost.fmt import when

if TYPE_CHECKING:
    from coophost.deploy.records import JobRecord


@click.group()
def runs() -> None:
    """Deploy runs recorded in state.db."""


@runs.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@json_option
@pass_app
def list_runs(app: AppContext, limit: int, as_json: bool) -> None:
    """List recent runs, newest first."""
    from dataclasses import asdict

    from coophost.deploy.records import RunLog
    from coophost.state import StateDB

    with StateDB(app.inventory) as db:
        records = RunLog(db).runs(limit)
    if as_json:
        app.emit_json([{k: v for k, v in asdict(r).items() if k != "jobs"}
                       | {"hosts": {j.host: j.status for j in r.jobs}} for r in records])
        return
    rows = []
    for r in records:
        took = f"{r.finished_at - r.started_at:.1f}s" if r.finished_at else ""
        counts: dict[str, int] = {}
        for job in r.jobs:
            counts[job.status] = counts.get(job.status, 0) + 1
        rows.append([str(r.id), when(r.started_at), took, r.status,
                     ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), escape(r.user)])
    table(app, ["run", "started", "took", "status", "hosts", "by"], rows)


@runs.command("show")
@click.argument("run_id", type=int, metavar="RUN")
@json_option
@pass_app
def show_run(app: AppContext, run_id: int, as_json: bool) -> None:
    """Show one run: each host's job, counters, units, failures and the tasks that changed."""
    from dataclasses import asdict

    from coophost.deploy.records import RunLog
    from coophost.state import StateDB

    with StateDB(app.inventory) as db:
        record = RunLog(db).run(run_id)
    if record is None:
        raise UsageError(f"no run {run_id}")
    if as_json:
        data = asdict(record)
        for job, shown in zip(record.jobs, data["jobs"], strict=True):
            shown["task_records"] = [t.stored() for t in job.task_records]
        app.emit_json(data)
        return
    app.out.print(f"run {record.id}: {record.status}, started {when(record.started_at)} "
                  f"by {record.user}, options {record.options}")
    table(app, ["host", "status", "ok", "changed", "failed", "unreachable", "units"],
          [[job.host, job.status, str(job.ok), str(job.changed), str(job.failed),
            str(job.unreachable), ", ".join(job.units)] for job in record.jobs])
    for job in record.jobs:
        if job.summary:
            app.out.print(f"{job.host}: {job.summary}")
    for job in record.jobs:
        for line in task_lines(job):
            app.out.print(line, markup=False, highlight=False)


def task_lines(job: JobRecord) -> list[str]:
    """A host's changed and failed tasks, a line each, under a heading; none: no lines."""
    if not job.task_records and not job.tasks_omitted:
        return []
    lines = [f"{job.host}: tasks that changed or failed"]
    for task in job.task_records:
        said = f": {task.message}" if task.message else ""
        lines.append(f"  {task.status:<11} {task.label()}{said}")
    if job.tasks_omitted:
        lines.append(f"  ... and {job.tasks_omitted} more, not recorded")
    return lines


commands: list[click.Command] = [runs]
