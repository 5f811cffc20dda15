"""How a deploy shows itself: a live table on a terminal, plain lines in a pipe, or nothing."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table

from coophost.deploy.executor import HostOutcome
from coophost.deploy.jobs import HostJob

STYLE = {"ok": "green", "failed": "red", "unreachable": "red", "unknown": "magenta",
         "canceled": "yellow"}


@dataclass
class HostLine:
    """One host's line of progress."""

    host: str
    expected: int
    task: str = "waiting"
    done: int = 0
    started: float | None = None
    ended: float | None = None
    status: str = "pending"
    path: str = "full"  # the job's path (coophost.deploy.jobs.choose_path) and why
    why: str = ""

    def elapsed(self) -> str:
        """Seconds since the job started, to the tenth."""
        if self.started is None:
            return ""
        return f"{(self.ended or time.monotonic()) - self.started:.1f}s"

    def count(self) -> str:
        """done/total (total from this host's last successful job)."""
        return f"{self.done}/{self.expected}" if self.expected else f"{self.done}/?"


class _Base:
    def __init__(self) -> None:
        self.lines: dict[str, HostLine] = {}
        self.lock = threading.Lock()

    def planned(self, jobs: dict[str, HostJob], expected_tasks: dict[str, int]) -> None:
        self.lines = {h: HostLine(h, expected_tasks.get(h, 0), path=j.path, why=j.why)
                      for h, j in jobs.items()}

    def started(self, host: str) -> None:
        with self.lock:
            line = self.lines[host]
            line.started, line.status, line.task = time.monotonic(), "running", "connecting"

    def event(self, host: str, kind: str, task: str) -> None:
        with self.lock:
            line = self.lines.get(host)
            if line is None:
                return
            if kind == "task":
                line.task = task
            elif kind == "done":
                line.done += 1

    def finished(self, outcome: HostOutcome) -> None:
        with self.lock:
            line = self.lines[outcome.host]
            line.ended, line.status = time.monotonic(), outcome.status
            line.task = "" if outcome.status == "ok" else outcome.summary.split("\n", 1)[0]


class SilentProgress(_Base):
    """For --json: keep track, print nothing."""


class PlainProgress(_Base):
    """A line per host as its job starts and ends (for pipes and logs)."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def started(self, host: str) -> None:
        """Print that the host started."""
        super().started(host)
        line = self.lines[host]
        self.console.print(f"{host}: started, {line.path} path ({line.why})")

    def finished(self, outcome: HostOutcome) -> None:
        """Print how the host ended."""
        super().finished(outcome)
        line = self.lines[outcome.host]
        counts = outcome.counts
        self.console.print(
            f"{outcome.host}: {outcome.status} in {line.elapsed()} "
            f"(ok={counts.get('ok', 0)} changed={counts.get('changed', 0)} "
            f"failed={counts.get('failed', 0)} unreachable={counts.get('unreachable', 0)})"
            + (f": {line.task}" if line.task else ""))


class LiveProgress(_Base):
    """A live table, a line per host: current task, done/total, elapsed."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.live = Live(console=console, refresh_per_second=4, transient=False,
                         get_renderable=self._table)

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False)
        for column in ("host", "path", "status", "tasks", "elapsed", "current task"):
            table.add_column(column, no_wrap=column != "current task")
        with self.lock:
            for line in self.lines.values():
                style = STYLE.get(line.status, "")
                table.add_row(line.host, line.path,
                              f"[{style}]{line.status}[/]" if style else line.status,
                              line.count(), line.elapsed(), line.task[:60])
        return table

    def planned(self, jobs: dict[str, HostJob], expected_tasks: dict[str, int]) -> None:
        """Start the live table."""
        super().planned(jobs, expected_tasks)
        self.live.start()

    def stop(self) -> None:
        """Stop refreshing (the last table stays on screen)."""
        self.live.stop()


def summary_table(outcomes: dict[str, HostOutcome], title: str,
                  jobs: dict[str, HostJob] | None = None) -> Table:
    """The final table: a row per host with its path and Ansible's counters."""
    table = Table(title=title)
    for column in ("host", "path", "status", "ok", "changed", "failed", "unreachable"):
        table.add_column(column)
    for host, outcome in sorted(outcomes.items()):
        style = STYLE.get(outcome.status, "")
        job = (jobs or {}).get(host)
        table.add_row(host, job.path if job else "", f"[{style}]{outcome.status}[/]",
                      *(str(outcome.counts.get(k, 0))
                        for k in ("ok", "changed", "failed", "unreachable")))
    return table
