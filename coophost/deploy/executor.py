"""Executors: how host jobs reach ansible. The local one runs ansible-runner on this machine.

The engine talks to an executor only through `run_hosts`, so a remote executor (ansible-runner's
transmit | worker | process streaming over SSH, as AWX's Receptor does) can slot in beside this
one without the engine changing.
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from coophost.deploy.runner import PlaybookResult, run_playbook
from coophost.deploy.tasks import TaskLog, TaskRecord, failure_message, item_label
from coophost.errors import HostUnreachable
from coophost.fsutil import private_folder
from coophost.layout import KNOWN_HOSTS_FILE
from coophost.registry.hosts import HostEntry, load_hosts

JOB_FOLDER_PREFIX = "coophost-job-"

EventSink = Callable[[str, str, str], None]  # (host, kind, task name)
OutcomeSink = Callable[["HostOutcome"], None]  # a host's outcome, the moment it is known

# The last task of site.yml's single play: once a host has run it, every stage and every
# notified handler has run there, and the host's outcome is known while the job goes on for
# the others (one job for many hosts still records each host the moment it converges).
CONVERGED_TASK = "Report the host converged"

# A vault client ansible runs to get the password from the variable coop.yml names: the
# password then never reaches argv, runner artifacts, or a file.
VAULT_CLIENT = """#!/usr/bin/env python3
import os, sys
name = os.environ.get("COOPHOST_VAULT_PASSWORD_ENV", "")
value = os.environ.get(name, "") if name else ""
if not value:
    sys.exit("coophost vault client: the vault password variable is not set")
sys.stdout.write(value + "\\n")
"""


@dataclass
class HostOutcome:
    """How one host's job ended."""

    host: str
    # ok, failed, unreachable, canceled; unknown: the transport to the worker running the
    # job was lost midway, so nobody knows what the play did (never taken as a success)
    status: str
    counts: dict[str, int] = field(default_factory=dict)
    summary: str = ""
    output: str = ""
    # Each failed task's role and what it said about what failed (message, loop item): what
    # the engine reads to name the member and unit behind a host's failure.
    causes: list[tuple[str, str]] = field(default_factory=list)
    # The tasks that changed or failed (coophost.deploy.tasks), and how many more there were.
    tasks: list[TaskRecord] = field(default_factory=list)
    tasks_omitted: int = 0


@dataclass(frozen=True)
class VaultAccess:
    """How ansible gets the vault password: a file path, or the name of a variable."""

    password_file: Path | None = None
    password_env: str | None = None


class Executor(Protocol):
    """Runs host jobs and reports each host's outcome."""

    def run_hosts(self, hosts: list[str], sink: EventSink, cancel: threading.Event,
                  done: OutcomeSink | None = None) -> dict[str, HostOutcome]:
        """Apply the site playbook to `hosts` (one job) and return per-host outcomes.

        `done`, when given, gets each host's outcome once, as soon as it is known (for a
        host that converges, while the job still runs for others; else when the job ends).
        """
        ...


def outcome_for(host: str, result: PlaybookResult, tasks: int, failures: list[str]) -> HostOutcome:
    """Per-host outcome from a playbook result. Pure."""
    stats = result.stats
    counts = {"ok": stats.get("ok", {}).get(host, 0),
              "changed": stats.get("changed", {}).get(host, 0),
              "failed": stats.get("failures", {}).get(host, 0),
              "unreachable": stats.get("dark", {}).get(host, 0), "tasks": tasks}
    if counts["unreachable"]:
        status = "unreachable"
    elif counts["failed"]:
        status = "failed"
    elif result.status == "canceled":
        status = "canceled"
    elif host in stats.get("processed", {}) and result.status == "successful":
        status = "ok"
    else:
        status = "failed"
        if not failures:
            tail = [ln for ln in result.stdout.splitlines() if ln.strip()][-3:]
            failures = [f"ansible ended with status {result.status}: " + " | ".join(tail)]
    return HostOutcome(host, status, counts, "\n".join(failures)[:2000],
                       output=result.stdout)


class LocalExecutor:
    """ansible-runner on this machine, one private data folder per job."""

    def __init__(self, inventory: Path, playbook: Path, *, check: bool = False,
                 mitogen: bool = False, vault: VaultAccess | None = None,
                 forks: int | None = None, strategy: str = "linear",
                 hosts: Mapping[str, HostEntry] | None = None,
                 extravars: Mapping[str, Any] | None = None) -> None:
        self.inventory = inventory
        self.hosts = hosts  # the connection facts the deploy read (None: read hosts.yml)
        self.playbook = playbook
        self.check = check
        self.mitogen = mitogen
        self.vault = vault or VaultAccess()
        self.forks = forks
        self.strategy = strategy
        self.extravars = dict(extravars or {})  # plain data only (the units playbook's list)

    def _env(self, scratch: Path) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.vault.password_file is not None:
            env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(self.vault.password_file.resolve())
        elif self.vault.password_env:
            client = scratch / "vault-client.py"
            client.write_text(VAULT_CLIENT)
            client.chmod(stat.S_IRWXU)
            env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(client)
            env["COOPHOST_VAULT_PASSWORD_ENV"] = self.vault.password_env
        if self.mitogen:
            env.update(mitogen_env(self.strategy))
        else:
            env["ANSIBLE_STRATEGY"] = self.strategy
        return env

    def run_hosts(self, hosts: list[str], sink: EventSink, cancel: threading.Event,
                  done: OutcomeSink | None = None) -> dict[str, HostOutcome]:
        """Check each host's key, run the playbook once over the others, split per host."""
        reported: set[str] = set()

        def report(outcome: HostOutcome) -> None:
            if outcome.host not in reported:
                reported.add(outcome.host)
                if done is not None:
                    done(outcome)

        refused = refuse_unpinned(self.inventory, hosts, sink, self.hosts)
        for outcome in refused.values():
            report(outcome)
        admitted = [h for h in hosts if h not in refused]
        outcomes = self._run_playbook(admitted, sink, cancel, report) if admitted else {}
        for host in admitted:
            report(outcomes[host])
        return {h: refused.get(h) or outcomes[h] for h in hosts}

    def _run_playbook(self, hosts: list[str], sink: EventSink, cancel: threading.Event,
                      report: OutcomeSink | None = None) -> dict[str, HostOutcome]:
        """Run the playbook once over `hosts`, report each host as it converges, split."""
        events = JobEvents(hosts, sink, with_diff=self.check, report=report)

        with private_folder(JOB_FOLDER_PREFIX) as scratch:
            result = run_playbook(
                self.playbook, self.inventory, limit=hosts, check=self.check,
                extravars=self.extravars,
                envvars=self._env(scratch), forks=self.forks or len(hosts),
                event_handler=events.on_event, cancel_callback=cancel.is_set)
        return events.outcomes(result)


class JobEvents:
    """What one job's ansible events say, per host: tasks run, failures, their causes.

    Its `on_event` is ansible-runner's event handler, for a local job as for one streamed
    back from a worker: the same events, read the same way.
    """

    def __init__(self, hosts: list[str], sink: EventSink, *, with_diff: bool = False,
                 report: OutcomeSink | None = None) -> None:
        self.hosts = hosts
        self.sink = sink
        self.report = report  # gets each host that converges, the moment it does
        self.counts = {h: {"ok": 0, "changed": 0} for h in hosts}
        self.converged: dict[str, HostOutcome] = {}
        self.tasks = dict.fromkeys(hosts, 0)
        self.failures: dict[str, list[str]] = {h: [] for h in hosts}
        self.causes: dict[str, list[tuple[str, str]]] = {h: [] for h in hosts}
        self.logs = {h: TaskLog(with_diff=with_diff) for h in hosts}
        self.stats: dict[str, dict[str, int]] = {}
        self.stdout: list[str] = []

    def on_event(self, event: dict[str, Any]) -> bool:
        """Record one event; True keeps it in the job's artifacts (only the stats)."""
        data = event.get("event_data") or {}
        host = data.get("host")
        kind = event.get("event", "")
        if event.get("stdout"):
            self.stdout.append(str(event["stdout"]))
        if kind == "playbook_on_stats":
            self.stats = {k: v for k, v in data.items() if isinstance(v, dict)}
            return True  # kept: ansible-runner reads its stats from this event
        if host not in self.tasks:
            return False
        task = str(data.get("task", ""))
        self.logs[host].add(kind, data, str(event.get("stdout") or ""))
        if kind == "runner_on_start":
            self.sink(host, "task", task)
        elif kind in ("runner_on_ok", "runner_on_skipped", "runner_on_failed",
                      "runner_on_unreachable"):
            self.tasks[host] += 1
            if kind in ("runner_on_failed", "runner_on_unreachable") \
                    and not data.get("ignore_errors"):
                res = data.get("res") or {}
                message = failure_message(res)
                item = item_label(res)
                self.failures[host].append(f"{task}{f' (item {item})' if item else ''}: "
                                           f"{message}")
                self.causes[host].append((str(data.get("role", "")), f"{message} {item}"))
            elif kind == "runner_on_ok":
                self.counts[host]["ok"] += 1
                self.counts[host]["changed"] += bool((data.get("res") or {}).get("changed"))
            self.sink(host, "done", task)
            if kind == "runner_on_ok" and task == CONVERGED_TASK and not self.failures[host]:
                self._converge(host)
        return False  # task events are not written to the job's artifacts

    def _converge(self, host: str) -> None:
        """A host ran the playbook's last task with no failure: its outcome, now."""
        outcome = HostOutcome(host, "ok", {**self.counts[host], "failed": 0, "unreachable": 0,
                                           "tasks": self.tasks[host]})
        outcome.tasks, outcome.tasks_omitted = self.logs[host].records, self.logs[host].omitted
        self.converged[host] = outcome
        if self.report is not None:
            self.report(outcome)

    def outcomes(self, result: PlaybookResult) -> dict[str, HostOutcome]:
        """Each host's outcome once the job ended as `result` says."""
        outcomes = {h: self.converged.get(h)
                    or outcome_for(h, result, self.tasks[h], self.failures[h])
                    for h in self.hosts}
        for host, outcome in outcomes.items():
            outcome.causes = self.causes[host]
            outcome.tasks = self.logs[host].records
            outcome.tasks_omitted = self.logs[host].omitted
        return outcomes


KEY_CHECK_TASK = "host key check"


def refuse_unpinned(inventory: Path, hosts: list[str], sink: EventSink,
                    entries: Mapping[str, HostEntry] | None = None) -> dict[str, HostOutcome]:
    """Check every host's key against the co-op's known_hosts, before Ansible touches it.

    Ansible checks it too (see coophost.deploy.runner), but this check fails before any
    authentication, names the host and the mismatch, and is the same for every strategy.
    Returns the outcome of each host refused (unreachable, or its key not the pinned one).
    `entries`: the hosts' connection facts as the deploy read them (else hosts.yml is read).
    """
    from coophost.ssh import check_host_key  # paramiko is slow to import

    if entries is None:
        entries = {e.name: e for e in load_hosts(inventory)}
    known = inventory / KNOWN_HOSTS_FILE

    def check(host: str) -> HostOutcome | None:
        if entries[host].vars.get("ansible_connection") == "local":
            return None  # the controller itself: no SSH, no key to pin
        sink(host, "task", KEY_CHECK_TASK)
        try:
            check_host_key(entries[host], known)
        except HostUnreachable as exc:  # HostKeyMismatch included
            counts = {"ok": 0, "changed": 0, "failed": 0, "unreachable": 1, "tasks": 0}
            hint = f" ({exc.hint})" if exc.hint else ""
            return HostOutcome(host, "unreachable", counts, exc.message + hint)
        finally:
            sink(host, "done", KEY_CHECK_TASK)
        return None

    with ThreadPoolExecutor(max_workers=min(len(hosts), 16) or 1) as pool:
        results = dict(zip(hosts, pool.map(check, hosts), strict=True))
    return {h: o for h, o in results.items() if o is not None}


def mitogen_env(strategy: str = "linear") -> dict[str, str]:
    """Settings that run a play with mitogen's strategy, when mitogen is installed."""
    import ansible_mitogen  # the `fast` extra

    plugins = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
    return {"ANSIBLE_STRATEGY_PLUGINS": str(plugins), "ANSIBLE_STRATEGY": f"mitogen_{strategy}"}


def mitogen_available() -> bool:
    """Whether the mitogen accelerator is installed."""
    try:
        import ansible_mitogen  # noqa: F401
    except ImportError:
        return False
    return True


