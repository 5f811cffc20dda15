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
    status: str  # ok, failed, unreachable, canceled
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

    def run_hosts(self, hosts: list[str], sink: EventSink,
                  cancel: threading.Event) -> dict[str, HostOutcome]:
        """Apply the site playbook to `hosts` (one job) and return per-host outcomes."""
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

    def run_hosts(self, hosts: list[str], sink: EventSink,
                  cancel: threading.Event) -> dict[str, HostOutcome]:
        """Check each host's key, run the playbook once over the others, split per host."""
        refused = refuse_unpinned(self.inventory, hosts, sink, self.hosts)
        admitted = [h for h in hosts if h not in refused]
        outcomes = self._run_playbook(admitted, sink, cancel) if admitted else {}
        return {h: refused.get(h) or outcomes[h] for h in hosts}

    def _run_playbook(self, hosts: list[str], sink: EventSink,
                      cancel: threading.Event) -> dict[str, HostOutcome]:
        """Run the playbook once over `hosts` and split the result per host."""
        tasks = dict.fromkeys(hosts, 0)
        failures: dict[str, list[str]] = {h: [] for h in hosts}
        causes: dict[str, list[tuple[str, str]]] = {h: [] for h in hosts}
        logs = {h: TaskLog(with_diff=self.check) for h in hosts}

        def on_event(event: dict[str, Any]) -> bool:
            data = event.get("event_data") or {}
            host = data.get("host")
            kind = event.get("event", "")
            if kind == "playbook_on_stats":
                return True  # kept: ansible-runner reads its stats from this event
            if host not in tasks:
                return False
            task = str(data.get("task", ""))
            logs[host].add(kind, data, str(event.get("stdout") or ""))
            if kind == "runner_on_start":
                sink(host, "task", task)
            elif kind in ("runner_on_ok", "runner_on_skipped", "runner_on_failed",
                          "runner_on_unreachable"):
                tasks[host] += 1
                if kind in ("runner_on_failed", "runner_on_unreachable") \
                        and not data.get("ignore_errors"):
                    res = data.get("res") or {}
                    message = failure_message(res)
                    item = item_label(res)
                    failures[host].append(f"{task}{f' (item {item})' if item else ''}: "
                                          f"{message}")
                    causes[host].append((str(data.get("role", "")), f"{message} {item}"))
                sink(host, "done", task)
            return False  # task events are not written to the job's artifacts

        with private_folder(JOB_FOLDER_PREFIX) as scratch:
            result = run_playbook(
                self.playbook, self.inventory, limit=hosts, check=self.check,
                extravars=self.extravars,
                envvars=self._env(scratch), forks=self.forks or len(hosts),
                event_handler=on_event, cancel_callback=cancel.is_set)
        outcomes = {h: outcome_for(h, result, tasks[h], failures[h]) for h in hosts}
        for host, outcome in outcomes.items():
            outcome.causes = causes[host]
            outcome.tasks, outcome.tasks_omitted = logs[host].records, logs[host].omitted
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


