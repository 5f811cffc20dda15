"""`coophost deploy`: plan, render, run each affected host, record what succeeded.

Hosts run concurrently: by default one ansible-runner job over every host, site.yml's single
play under the free strategy, each host recorded the moment it converges (its last task); or
one job per host (`--mode per-host`). docs/deploy-engine.md has the measurements behind the
choice. A host's failure stays with that host; a host is recorded as applied only in the
transaction that records its successful outcome.
"""

from __future__ import annotations

import getpass
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from coophost.deploy.executor import (
    JOB_FOLDER_PREFIX,
    Executor,
    HostOutcome,
    LocalExecutor,
    VaultAccess,
)
from coophost.deploy.jobs import (
    FAST,
    HostJob,
    RunContext,
    Selection,
    blame,
    default_parallel,
    fingerprint_jobs,
    job_from_record,
    plan_jobs,
)
from coophost.deploy.records import RunLog
from coophost.deploy.runner import RUN_FOLDER_PREFIX
from coophost.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_UNREACHABLE,
    ConfigError,
)
from coophost.fsutil import sweep_dead_folders
from coophost.layout import KNOWN_HOSTS_FILE
from coophost.registry.model import VaultSettings

MODES = ("batch", "per-host")
UNITS_PLAYBOOK = "units.yml"  # the fast path's playbook
FAST_SERVICES_VAR = "coophost_fast_services"  # its extra var: the services whose units it applies


@dataclass(frozen=True)
class DeployOptions:
    """How to deploy (the CLI's flags)."""

    selection: Selection = field(default_factory=Selection)
    parallel: int | None = None
    check: bool = False
    wait: bool = False
    mode: str = "batch"
    mitogen: bool = False
    local: bool = False  # every job on this controller, even for hosts a worker serves


@dataclass
class DeployResult:
    """What a deploy did."""

    run_id: int | None
    jobs: dict[str, HostJob] = field(default_factory=dict)
    outcomes: dict[str, HostOutcome] = field(default_factory=dict)
    canceled: bool = False

    @property
    def exit_code(self) -> int:
        """DESIGN.md's exit code for this result."""
        statuses = {o.status for o in self.outcomes.values()}
        if self.canceled or "canceled" in statuses:
            return EXIT_INTERRUPTED
        if statuses & {"unreachable", "unknown"}:  # unknown: a worker's transport was lost
            return EXIT_UNREACHABLE
        return EXIT_PENDING if "failed" in statuses else EXIT_OK

    def by_member(self) -> dict[str, dict[str, str]]:
        """Map member -> service -> the status of the host that runs it.

        Every unit has a role that applies it: a service without one is "coming" in the
        catalogue, and no member file may list it.
        """
        table: dict[str, dict[str, str]] = {}
        for host, job in self.jobs.items():
            status = self.outcomes[host].status if host in self.outcomes else "pending"
            for member, service, _ in job.units:
                table.setdefault(member, {})[service] = f"{status} ({host})"
        return dict(sorted(table.items()))


class Progress(Protocol):
    """Where the engine reports as it goes."""

    def planned(self, jobs: dict[str, HostJob], expected_tasks: dict[str, int]) -> None:
        """The hosts about to run, with a task count estimate per host (0: unknown)."""

    def event(self, host: str, kind: str, task: str) -> None:
        """A task started ('task') or finished ('done') on a host."""

    def started(self, host: str) -> None:
        """A host's job started."""

    def finished(self, outcome: HostOutcome) -> None:
        """A host's job ended."""


def vault_access(root: Path, settings: VaultSettings) -> VaultAccess:
    """How ansible will get the co-op's vault password (a path or a variable name).

    `settings`: coop.yml's `vault:` as the command read it.
    """
    import os

    from coophost.secrets import password_file_path

    if settings.password_env and os.environ.get(settings.password_env):
        return VaultAccess(password_env=settings.password_env)
    if settings.password_file and password_file_path(root, settings).is_file():
        return VaultAccess(password_file=password_file_path(root, settings))
    return VaultAccess()


def deploy(root: Path, options: DeployOptions, progress: Progress, cancel: threading.Event,
           executor_factory: Callable[[VaultAccess], Executor] | None = None) -> DeployResult:
    """Deploy the co-op at `root` under its lock; see the module docstring.

    The co-op is read once, under the lock: deciding (the desired state, the host jobs) is
    pure, and what it decided to write (life ids before hashing, the new placements, host
    vars and secrets) is written here, in that order, before any job runs.
    """
    from coophost.desired.hostvars import render_hosts
    from coophost.desired.units import check_names, compute, fast_capable
    from coophost.layout import playbook
    from coophost.lock import coop_lock
    from coophost.registry.edit import assign_lives, record_placements
    from coophost.registry.hosts import connections
    from coophost.registry.loader import load_registry
    from coophost.state import StateDB

    if options.mode not in MODES:
        raise ConfigError(f"--mode {options.mode!r}: choose one of {', '.join(MODES)}")

    def check_known_hosts() -> bool:
        # A known_hosts line coophost cannot read: exit 2 before anything is written or run.
        # Only when something will be (a deploy with nothing to do never imports paramiko).
        from coophost.ssh import validate_known_hosts

        validate_known_hosts(root / KNOWN_HOSTS_FILE)
        return True

    known_hosts_checked = False
    for prefix in (RUN_FOLDER_PREFIX, JOB_FOLDER_PREFIX):  # left by a killed deploy
        sweep_dead_folders(prefix)
    selection = options.selection
    with coop_lock(root, wait=float("inf") if options.wait else 0.0, purpose="deploy"):
        with StateDB(root) as db:
            log = RunLog(db)
            log.close_abandoned_runs()
            resume = log.hosts_to_resume() if selection.resume else []
            loaded = load_registry(root)
            # Before hashing, even in check mode (rendering needs them): a unit's data and
            # secrets are keyed by its member's life. Only members from before lives lack one.
            if any(not member.life for member in loaded.registry.members.values()):
                known_hosts_checked = check_known_hosts()  # before anything is written
            if assign_lives(root, loaded):
                loaded = load_registry(root, base=loaded.base)  # the files just written
            desired = compute(loaded)
            check_names(desired, root, members=sorted(selection.members),
                        hosts=sorted(selection.hosts), services=sorted(selection.services))
            decision = plan_jobs(desired, db.applied(), selection, resume,
                                 fast_capable(loaded.catalogue))
            jobs = decision.jobs
            fingerprint_jobs(jobs, loaded, desired.role_versions)
            if (jobs or decision.placements) and not known_hosts_checked:
                known_hosts_checked = check_known_hosts()  # before anything is written or run
            if not options.check and decision.placements:
                record_placements(root, decision.placements)
            if not jobs:
                return DeployResult(run_id=None)
            expected = {h: log.last_tasks(h, j.path) for h, j in jobs.items()}
        render_hosts(loaded, root, desired=desired)  # every host's vars, and new secrets
        vault = vault_access(root, loaded.registry.coop.vault)
        parallel = options.parallel or default_parallel(len(jobs))
        options = replace(options, mode=effective_mode(options, len(jobs)))
        strategy = "free" if options.mode == "batch" else "linear"
        forks = parallel if options.mode == "batch" else None
        entries = connections(loaded.registry.hosts)
        # hosts.yml's workers, from the same read as its hosts (load_registry keeps its base)
        workers = [] if options.local or loaded.base is None else loaded.base.workers
        context = RunContext(jobs=jobs)  # _run sets its run id; receptor units record it

        def executor_for(fast_services: list[str] | None) -> Executor:
            """The site playbook's executor, or (fast_services given) the units playbook's.

            Hosts a worker serves run there (coophost.deploy.remote), on either path.
            """
            name, extravars = "site.yml", {}
            if fast_services is not None:
                name, extravars = UNITS_PLAYBOOK, {FAST_SERVICES_VAR: fast_services}
            local = LocalExecutor(root, playbook(name), check=options.check,
                                  mitogen=options.mitogen, vault=vault, strategy=strategy,
                                  forks=forks, hosts=entries, extravars=extravars)
            if not workers:
                return local
            from coophost.deploy.remote import RemoteExecutor, RoutingExecutor

            remote = RemoteExecutor(root, entries, check=options.check, mitogen=options.mitogen,
                                    vault=vault, strategy=strategy, forks=forks,
                                    playbook=name, extravars=extravars, run=context)
            return RoutingExecutor(local, remote, workers, entries)

        if executor_factory is not None:  # one executor for both paths (tests)
            return _run(root, jobs, options, parallel, executor_factory(vault), progress,
                        cancel, expected)
        return _run(root, jobs, options, parallel, executor_for(None), progress, cancel,
                    expected, executor_for, context)


def record_reattached(root: Path, record: Mapping[str, Any],
                      outcomes: Mapping[str, HostOutcome]) -> dict[str, str]:
    """Record a re-attached receptor job's hosts in state.db, as its deploy would have.

    Call with the co-op's lock held. A host is recorded in the job's run with the outcome its
    events gave, and, when it converged, as running what that job applied (the unit record
    holds it); `deploy --resume` then reruns only the hosts that did not converge. A host that
    a later run has deployed again is left to that run. Returns host -> what was done.
    """
    from coophost.state import StateDB

    run_id = record.get("run_id")
    applied = record.get("applied") or {}
    done: dict[str, str] = {}
    if not isinstance(run_id, int):
        return dict.fromkeys(outcomes, "not recorded: the unit names no deploy run")
    with StateDB(root) as db:
        log = RunLog(db)
        log.close_abandoned_runs()  # the lost controller's run, if no deploy closed it since
        for host, outcome in sorted(outcomes.items()):
            if log.latest_run_of(host) != run_id:
                done[host] = "not recorded: a later deploy ran this host"
                continue
            try:
                job = job_from_record(host, applied[host])
            except (KeyError, ValueError):
                done[host] = "not recorded: the unit holds no job record for it"
                continue
            outcome.summary = f"{outcome.summary} (re-attached)".strip()
            record_outcome(log, run_id, job, outcome)
            done[host] = f"recorded as {outcome.status} in run {run_id}"
        log.settle_run(run_id)
    return done


def record_outcome(log: RunLog, run_id: int, job: HostJob, outcome: HostOutcome) -> None:
    """Record a host job's outcome and, when it succeeded, what the host now runs."""
    log.job_finished(run_id, outcome.host, outcome.status, outcome.counts, outcome.summary,
                     (job.host_hash, job.units) if outcome.status == "ok" else None,
                     job.settings, outcome.tasks, outcome.tasks_omitted, job.level, job.path)


def effective_mode(options: DeployOptions, jobs: int) -> str:
    """The shape a deploy runs in. Pure.

    One job cannot hold hosts back: under the free strategy every host of it is under way at
    once, forks only limiting tasks at a time. An explicit `--parallel N` below the number of
    hosts asks for at most N hosts under way, which only one job per host gives (a rolling
    window of N jobs).
    """
    if options.mode == "batch" and options.parallel is not None and options.parallel < jobs:
        return "per-host"
    return options.mode


def _run(root: Path, jobs: dict[str, HostJob], options: DeployOptions, parallel: int,
         executor: Executor, progress: Progress, cancel: threading.Event,
         expected: dict[str, int],
         fast_executor: Callable[[list[str]], Executor] | None = None,
         context: RunContext | None = None) -> DeployResult:
    """Run the jobs; a fast-path job through `fast_executor(its services)` when given.

    `context` gets the run's id once it is recorded (the executors' receptor units keep it).
    """
    from coophost.state import StateDB

    record = not options.check  # check mode changes neither hosts nor state
    result = DeployResult(run_id=None, jobs=jobs)
    run_options: dict[str, object] = {
        "members": sorted(options.selection.members), "hosts": sorted(options.selection.hosts),
        "services": sorted(options.selection.services), "all": options.selection.everything,
        "resume": options.selection.resume, "parallel": parallel, "mode": options.mode,
        "mitogen": options.mitogen, "local": options.local, "full": options.selection.full,
        "paths": {h: j.path for h, j in sorted(jobs.items())}}
    if record:
        with StateDB(root) as db:
            units = {h: j.unit_names for h, j in jobs.items()}
            result.run_id = RunLog(db).start_run("deploy", run_options, getpass.getuser(), units)
        if context is not None:
            context.run_id = result.run_id
    progress.planned(jobs, expected)
    lock = threading.Lock()

    def finish(outcome: HostOutcome) -> None:
        if outcome.status == "failed":
            culprits = blame(outcome.causes, jobs[outcome.host].units)
            if culprits:
                outcome.summary += "\ncaused by " + "; ".join(
                    f"member {member}" + (f" ({', '.join(units)})" if units else "")
                    for member, units in culprits)
        with lock:
            result.outcomes[outcome.host] = outcome
        progress.finished(outcome)
        if record and result.run_id is not None:
            with StateDB(root) as db:
                record_outcome(RunLog(db), result.run_id, jobs[outcome.host], outcome)

    def start(hosts: list[str]) -> None:
        for host in hosts:
            progress.started(host)
            if record and result.run_id is not None:
                with StateDB(root) as db:
                    RunLog(db).job_started(result.run_id, host)

    def one_job(hosts: list[str]) -> None:
        if cancel.is_set():
            for host in hosts:
                finish(HostOutcome(host, "canceled", summary="canceled before it started"))
            return
        start(hosts)
        fast = [s for h in hosts if jobs[h].path == FAST for s in jobs[h].fast_services]
        runs = executor
        if fast_executor is not None and jobs[hosts[0]].path == FAST:
            runs = fast_executor(sorted(set(fast)))
        finished: set[str] = set()

        def done(outcome: HostOutcome) -> None:
            finished.add(outcome.host)
            finish(outcome)

        for outcome in runs.run_hosts(hosts, progress.event, cancel, done).values():
            if outcome.host not in finished:  # an executor that reports only at the end
                done(outcome)

    if options.mode == "per-host":
        batches = [[h] for h in jobs]
    else:  # one batch per path (a playbook runs one path), both at once
        batches = [b for b in ([h for h, j in jobs.items() if j.path != FAST],
                               [h for h, j in jobs.items() if j.path == FAST]) if b]
    try:
        with ThreadPoolExecutor(max_workers=parallel if options.mode == "per-host"
                                else len(batches) or 1) as pool:
            for future in [pool.submit(one_job, batch) for batch in batches]:
                future.result()
    finally:
        result.canceled = cancel.is_set()
        if record and result.run_id is not None:
            statuses = {o.status for o in result.outcomes.values()}
            status = ("canceled" if result.canceled else
                      "ok" if statuses <= {"ok"} and len(result.outcomes) == len(jobs)
                      else "failed")
            with StateDB(root) as db:
                RunLog(db).finish_run(result.run_id, status)
    return result
