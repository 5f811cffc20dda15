"""The record of deploy runs in state.db: runs, each host's job, and what a host now runs.

State for a host is written only in the same transaction that records its job as successful,
so an interrupted or failed deploy never leaves a host recorded as applied.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from coophost.deploy.tasks import MAX_MESSAGE, MAX_TASKS, TaskRecord
from coophost.state import StateDB, write_applied

RUN_ACTIVE = "running"
JOB_DONE = frozenset({"ok", "failed", "unreachable", "unknown", "canceled"})


@dataclass
class JobRecord:
    """One host's job in a run, as recorded."""

    run_id: int
    host: str
    status: str
    started_at: float | None
    finished_at: float | None
    ok: int
    changed: int
    failed: int
    unreachable: int
    tasks: int
    units: list[str]
    summary: str
    # The tasks that changed or failed (no diffs), and how many more were not kept.
    task_records: list[TaskRecord] = field(default_factory=list)
    tasks_omitted: int = 0
    path: str = "full"  # the site playbook (full) or the units playbook (fast)


@dataclass
class RunRecord:
    """One deploy run, as recorded, with its host jobs."""

    id: int
    started_at: float
    finished_at: float | None
    status: str
    mode: str
    options: dict[str, object]
    user: str
    jobs: list[JobRecord] = field(default_factory=list)


class RunLog:
    """Deploy runs over one co-op's StateDB."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    def start_run(self, mode: str, options: dict[str, object], user: str,
                   jobs: dict[str, list[str]]) -> int:
        """Record a new run with a pending job per host (`jobs`: host -> its units)."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO run (started_at, status, mode, options, user) VALUES (?, ?, ?, ?, ?)",
                (time.time(), RUN_ACTIVE, mode, json.dumps(options, sort_keys=True), user))
            run_id = int(cur.lastrowid or 0)
            conn.executemany(
                "INSERT INTO host_job (run_id, host, status, units) VALUES (?, ?, 'pending', ?)",
                [(run_id, host, json.dumps(units)) for host, units in sorted(jobs.items())])
        return run_id


    def job_started(self, run_id: int, host: str) -> None:
        """Mark a host's job as running."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE host_job SET status = 'running', started_at = ? "
                         "WHERE run_id = ? AND host = ?", (time.time(), run_id, host))


    def job_finished(self, run_id: int, host: str, status: str, counts: dict[str, int],
                      summary: str, applied: tuple[str, list[tuple[str, str, str]]] | None,
                      settings: Mapping[tuple[str, str], str] | None = None,
                      tasks: Sequence[TaskRecord] = (), tasks_omitted: int = 0,
                      level: str | None = None, path: str = "full") -> None:
        """Record a job's outcome and, only for a host that succeeded, what it now runs.

        Both happen in one transaction: a crash leaves either neither or both. `tasks`: the
        tasks that changed or failed, of which the first MAX_TASKS are kept (their diffs never).
        `level`: the host-level hash recorded with what was applied; `path`: full or fast.
        """
        kept = list(tasks)[:MAX_TASKS]
        tasks_omitted += len(tasks) - len(kept)
        now = time.time()
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE host_job SET status = ?, finished_at = ?, ok = ?, changed = ?, failed = ?, "
                "unreachable = ?, tasks = ?, summary = ? WHERE run_id = ? AND host = ?",
                (status, now, counts.get("ok", 0), counts.get("changed", 0),
                 counts.get("failed", 0), counts.get("unreachable", 0), counts.get("tasks", 0),
                 summary, run_id, host))
            conn.execute("UPDATE host_job SET tasks_omitted = ?, path = ? "
                         "WHERE run_id = ? AND host = ?", (tasks_omitted, path, run_id, host))
            conn.execute("DELETE FROM job_task WHERE run_id = ? AND host = ?", (run_id, host))
            conn.executemany(
                "INSERT INTO job_task (run_id, host, seq, role, task, item, status, message) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, host, seq, t.role, t.task, t.item, t.status, t.message[:MAX_MESSAGE])
                 for seq, t in enumerate(kept)])
            if applied is not None:
                write_applied(conn, host, applied[0], applied[1], run_id, settings, level)

    def finish_run(self, run_id: int, status: str) -> None:
        """Close a run; jobs that never finished are recorded as canceled."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE host_job SET status = 'canceled', finished_at = ? "
                         "WHERE run_id = ? AND status IN ('pending', 'running')",
                         (time.time(), run_id))
            conn.execute("UPDATE run SET status = ?, finished_at = ? WHERE id = ?",
                         (status, time.time(), run_id))


    def close_abandoned_runs(self) -> list[int]:
        """Close runs left 'running' by a coophost that died (call with the co-op lock held)."""
        ids = [int(r[0]) for r in self.db.conn.execute("SELECT id FROM run WHERE status = ?",
                                                      (RUN_ACTIVE,))]
        for run_id in ids:
            self.finish_run(run_id, "abandoned")
        return ids


    def runs(self, limit: int = 20) -> list[RunRecord]:
        """The most recent runs, newest first, with their jobs."""
        rows = self.db.conn.execute(
            "SELECT id, started_at, finished_at, status, mode, options, user FROM run "
            "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [self._with_jobs(row) for row in rows]


    def run(self, run_id: int) -> RunRecord | None:
        """One run with its jobs, or None."""
        row = self.db.conn.execute(
            "SELECT id, started_at, finished_at, status, mode, options, user FROM run "
            "WHERE id = ?", (run_id,)).fetchone()
        return self._with_jobs(row) if row else None


    def _with_jobs(self, row: tuple[object, ...]) -> RunRecord:
        run_id, started, finished, status, mode, options, user = row
        run = RunRecord(int(str(run_id)), float(str(started)),
                        None if finished is None else float(str(finished)), str(status),
                        str(mode), json.loads(str(options)), str(user))
        for job in self.db.conn.execute(
                "SELECT run_id, host, status, started_at, finished_at, ok, changed, failed, "
                "unreachable, tasks, units, summary, tasks_omitted, path FROM host_job "
                "WHERE run_id = ? "
                "ORDER BY host", (run.id,)).fetchall():
            run.jobs.append(JobRecord(
                run_id=job[0], host=job[1], status=job[2], started_at=job[3],
                finished_at=job[4], ok=job[5], changed=job[6], failed=job[7],
                unreachable=job[8], tasks=job[9], units=json.loads(job[10]), summary=job[11],
                task_records=self._tasks(run.id, str(job[1])), tasks_omitted=job[12],
                path=job[13]))
        return run

    def _tasks(self, run_id: int, host: str) -> list[TaskRecord]:
        return [TaskRecord(*row) for row in self.db.conn.execute(
            "SELECT role, task, item, status, message FROM job_task "
            "WHERE run_id = ? AND host = ? ORDER BY seq", (run_id, host))]

    def last_tasks(self, host: str, path: str = "full") -> int:
        """How many tasks the host's last finished job on `path` ran (a progress estimate)."""
        row = self.db.conn.execute(
            "SELECT tasks FROM host_job WHERE host = ? AND status = 'ok' AND tasks > 0 "
            "AND path = ? ORDER BY run_id DESC LIMIT 1", (host, path)).fetchone()
        return int(row[0]) if row else 0

    def latest_run_of(self, host: str) -> int | None:
        """The last run that had a job for `host`."""
        row = self.db.conn.execute("SELECT MAX(run_id) FROM host_job WHERE host = ?",
                                   (host,)).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def settle_run(self, run_id: int) -> None:
        """A run whose every job is now ok (re-attached) is ok; otherwise it keeps its status."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE run SET status = 'ok' WHERE id = ? AND status != ? AND NOT EXISTS "
                         "(SELECT 1 FROM host_job WHERE run_id = ? AND status != 'ok')",
                         (run_id, RUN_ACTIVE, run_id))

    def hosts_to_resume(self) -> list[str]:
        """Hosts whose job in the last run did not succeed (failed, unreached, canceled)."""
        runs = self.runs(limit=1)
        if not runs:
            return []
        return [job.host for job in runs[0].jobs if job.status != "ok"]
