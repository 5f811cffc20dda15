"""Execution nodes ("workers") declared in hosts.yml, and which worker runs which host's job.

A worker is a host of group `coophost_workers`. It is not a service host: no member unit is
placed on it and `coophost deploy` never applies the site playbook to it (the playbooks target
`all:!coophost_workers`). Its host variables say what it serves and how many jobs it runs at
once:

    coophost_workers:
      hosts:
        w1:
          ansible_host: 10.1.0.5
          coophost_worker_serves: [h1, mail]    # host names or group names of hosts.yml
          coophost_worker_capacity: 4           # jobs at once (default 2)
          coophost_worker_transport: receptor   # ssh (default) or receptor (TLS, signed work)
          coophost_worker_receptor_port: 27199  # the worker's receptor TLS port (default)

Routing (pure, `route`): a host's job goes to a worker that serves the host itself or one of
its groups, the least loaded one (running jobs over capacity). A host no worker serves runs on
the controller, as before workers existed. A host some worker serves never falls back to the
controller: the worker is there because the controller may not reach that host (another site,
another network), so when no worker of it answers, the host is "unreachable".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from coophost.registry import checks
from coophost.registry.model import HostEntry

WORKERS_GROUP = "coophost_workers"
SERVES_VAR = "coophost_worker_serves"
CAPACITY_VAR = "coophost_worker_capacity"
JOBS_DIR_VAR = "coophost_worker_jobs_dir"
TRANSPORT_VAR = "coophost_worker_transport"
RECEPTOR_PORT_VAR = "coophost_worker_receptor_port"
TRANSPORTS = ("ssh", "receptor")
DEFAULT_RECEPTOR_PORT = 27199
NODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
DEFAULT_CAPACITY = 2
MAX_CAPACITY = 256
# The account the controller's key logs in to on a worker, restricted by a forced command
# (roles/worker), and where that command lets ansible-runner unpack each job.
WORKER_ACCOUNT = "coophost-worker"
DEFAULT_JOBS_DIR = "/var/lib/coophost-worker/jobs"


@dataclass(frozen=True)
class Worker:
    """One execution node of hosts.yml."""

    name: str
    connection: HostEntry  # how to reach it (its admin account: the role is applied with it)
    serves: tuple[str, ...]  # host and group names, as written
    capacity: int
    jobs_dir: str = DEFAULT_JOBS_DIR
    transport: str = "ssh"  # how jobs reach it: "ssh" (forced command) or "receptor"
    receptor_port: int = DEFAULT_RECEPTOR_PORT

    @property
    def job_connection(self) -> HostEntry:
        """How the controller reaches the forced command: the worker account, same key."""
        entry = self.connection
        return HostEntry(entry.name, entry.address, entry.port, WORKER_ACCOUNT, entry.key_file,
                         entry.groups, entry.vars)

    def serves_host(self, host: str, groups: Iterable[str]) -> bool:
        """Whether this worker runs the jobs of `host` (a member of `groups`)."""
        return host in self.serves or any(g in self.serves for g in groups)


def is_worker(groups: Iterable[str]) -> bool:
    """Whether a host of these groups is a worker."""
    return WORKERS_GROUP in groups


def parse_worker(entry: HostEntry, file: str, known_hosts: Iterable[str],
                 known_groups: Iterable[str]) -> Worker:
    """Check one worker's variables (exit 2 naming file, field and value on a problem).

    `known_hosts`/`known_groups`: the service hosts and groups of hosts.yml, which is all a
    worker may serve (a worker never serves a worker).
    """
    where = f"hosts.{entry.name}"
    hvars: Mapping[str, Any] = entry.vars
    errors = checks.Collector()
    serves: list[str] = []
    hosts, groups = set(known_hosts), set(known_groups) - {"all", WORKERS_GROUP}
    with errors.check():
        raw = hvars.get(SERVES_VAR)
        if raw is None:
            checks.fail(file, f"{where}.{SERVES_VAR}", None,
                        "a worker must say which hosts or groups it serves",
                        hint=f"{SERVES_VAR}: [h1, mail]")
        items = checks.sequence(raw, file, f"{where}.{SERVES_VAR}")
        if not items:
            checks.fail(file, f"{where}.{SERVES_VAR}", raw, "serves nothing: name at least "
                        "one host or group")
        for index, item in enumerate(items):
            field = f"{where}.{SERVES_VAR}[{index}]"
            if not isinstance(item, str):
                checks.fail(file, field, item, "must be a host or group name")
            if item not in hosts and item not in groups:
                checks.fail(file, field, item, "no such host or group in hosts.yml "
                            f"(known: {checks.suggest(str(item), hosts | groups)})")
            serves.append(item)
    capacity = DEFAULT_CAPACITY
    with errors.check():
        capacity = checks.integer(hvars.get(CAPACITY_VAR, DEFAULT_CAPACITY), file,
                                  f"{where}.{CAPACITY_VAR}", 1, MAX_CAPACITY)
    jobs_dir = DEFAULT_JOBS_DIR
    with errors.check():
        jobs_dir = str(hvars.get(JOBS_DIR_VAR, DEFAULT_JOBS_DIR))
        if not jobs_dir.startswith("/") or not all(
                part and (part.replace("-", "").replace("_", "").replace(".", "").isalnum())
                and part not in (".", "..") for part in jobs_dir.split("/")[1:]):
            checks.fail(file, f"{where}.{JOBS_DIR_VAR}", jobs_dir,
                        "must be an absolute path of plain names (a-z, 0-9, '-', '_', '.')")
    transport = "ssh"
    with errors.check():
        raw_transport = hvars.get(TRANSPORT_VAR, "ssh")
        if raw_transport not in TRANSPORTS:
            checks.fail(file, f"{where}.{TRANSPORT_VAR}", raw_transport,
                        f"must be one of {', '.join(TRANSPORTS)}")
        transport = str(raw_transport)
    receptor_port = DEFAULT_RECEPTOR_PORT
    with errors.check():
        receptor_port = checks.integer(hvars.get(RECEPTOR_PORT_VAR, DEFAULT_RECEPTOR_PORT), file,
                                       f"{where}.{RECEPTOR_PORT_VAR}", 1, 65535)
    with errors.check():
        if transport == "receptor" and not NODE_ID_RE.match(entry.name):
            checks.fail(file, f"{where}", entry.name, "a receptor worker's name is its node ID: "
                        "letters, digits, '.', '_' and '-', at most 63")
    errors.done()
    return Worker(entry.name, entry, tuple(serves), capacity, jobs_dir, transport,
                  receptor_port)


def serving(host: str, groups: Iterable[str], workers: Iterable[Worker]) -> list[Worker]:
    """The workers that serve `host`, in name order (empty: the controller runs it). Pure."""
    groups = tuple(groups)
    return sorted((w for w in workers if w.serves_host(host, groups)), key=lambda w: w.name)


def least_loaded(candidates: Iterable[Worker], running: Mapping[str, int]) -> Worker | None:
    """The candidate with a free slot and the lowest load (running / capacity), else None.

    Ties go to the first by name, so routing is reproducible. Pure.
    """
    best: Worker | None = None
    best_load = 2.0
    for worker in sorted(candidates, key=lambda w: w.name):
        busy = running.get(worker.name, 0)
        if busy >= worker.capacity:
            continue
        load = busy / worker.capacity
        if load < best_load:
            best, best_load = worker, load
    return best
