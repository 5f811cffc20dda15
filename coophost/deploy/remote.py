"""Host jobs run on execution nodes (workers) with ansible-runner's streaming protocol, over SSH.

On the controller, `ansible_runner.run(streamer="transmit")` packs the job (its private data
folder and arguments) into a stream; an SSH channel (paramiko, pinned host key) carries it to
the worker's forced command, which runs `ansible-runner worker --delete` into a job folder; the
worker's output stream comes back on the same channel into `streamer="process"`, which hands
each event to the same handler a local job uses and unpacks the worker's artifacts here.

What a job's folder carries (built by `job_folder`, unpacked on the worker under
`<jobs_dir>/<job id>`, removed there when the job ends however it ends):
  project/         ansible.cfg, playbooks/, roles/, services/ (the controller's content)
  inventory/       hosts.yml, host_vars/<host>.yml of the job's hosts only (vault-encrypted
                   secrets stay encrypted), group_vars/ when the co-op has one, and
                   zz-coophost-worker.yml that points each host at the carried key
  keys/            the controller's SSH key(s) of the job's hosts (0600)
  known_hosts      the co-op's pinned host keys: the worker checks them as the controller does
  vault/password   the vault password (0600), when the co-op has one
Paths inside the job are absolute worker paths (the forced command only accepts
`<jobs_dir>/<hex id>`, so the controller knows them before sending).

A job whose stream ends before the worker's artifacts arrived (the SSH transport dropped, or
went silent longer than the read timeout: the worker sends a keepalive every few seconds) is
"unknown" for each of its hosts: the play may have gone on there. `deploy --resume` reruns it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coophost.deploy.executor import (
    JOB_FOLDER_PREFIX,
    EventSink,
    Executor,
    HostOutcome,
    JobEvents,
    OutcomeSink,
    VaultAccess,
)
from coophost.deploy.jobs import RunContext
from coophost.deploy.runner import PlaybookResult, _keep_for_inspection
from coophost.errors import ConfigError, CoophostError, HostUnreachable
from coophost.fsutil import private_folder
from coophost.layout import HOST_VARS_DIR, HOSTS_FILE, KNOWN_HOSTS_FILE, content_root
from coophost.registry.hosts import HostEntry
from coophost.registry.workers import Worker, least_loaded, serving

PACKAGES = ("ansible-core", "ansible-runner", "mitogen")
KEEPALIVE_SECONDS = 5
READ_TIMEOUT = 30.0  # no byte from the worker for this long: the transport is taken as lost
UNKNOWN_HINT = "the worker's transport was lost midway: what the play did is unknown"
CONTENT_IGNORE = shutil.ignore_patterns("molecule", "tests", "__pycache__", "*.pyc", ".*")
OVERRIDES_FILE = "zz-coophost-worker.yml"
# The collections the roles use beyond ansible.builtin: carried with each job from the
# controller's own installation, so the worker runs exactly the controller's modules.
JOB_COLLECTIONS = ("ansible.posix", "community.postgresql")


# -- versions ---------------------------------------------------------------------------------
def controller_versions() -> dict[str, str]:
    """The controller's versions of the packages a worker must match exactly."""
    from importlib import metadata

    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = ""
    return found


def version_mismatches(controller: Mapping[str, str], worker: Mapping[str, str]) -> list[str]:
    """Each package whose worker version differs from the controller's, as a phrase. Pure."""
    return [f"{name} {worker.get(name) or 'missing'} (controller {controller[name]})"
            for name in PACKAGES if worker.get(name, "") != controller.get(name, "")]


def _worker_command(worker: Worker, known_hosts: Path, command: str,
                    timeout: float = 60.0, node: Any = None) -> tuple[int, str, str]:
    """Run one allowed command through the worker's forced command.

    Over SSH (pinned host key), or for a receptor worker when the controller's receptor
    `node` is given, as signed work on the mesh (the work type's command is the same forced
    command, with the same allowlist).
    """
    if worker.transport == "receptor" and node is not None:
        return _receptor_command(worker, node, command, timeout)
    from coophost.ssh import connect

    with connect(worker.job_connection, known_hosts, timeout=timeout) as client:
        _stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        return stdout.channel.recv_exit_status(), out, err


def relay(recv: Callable[[int], bytes], put: Callable[[bytes], object], cancel: threading.Event,
          end: StreamEnd, read_timeout: float,
          each_turn: Callable[[], None] | None = None) -> bool:
    """Give `put` what `recv` returns until its end (True).

    A cancel, or `read_timeout` seconds without data, stops it early (False, `end.lost` says
    which). `recv` raises TimeoutError when nothing came for a while (a socket's or a
    channel's timeout); `each_turn` runs before each read (an SSH channel's stderr is
    drained).
    """
    idle_since = time.monotonic()
    while True:
        if each_turn is not None:
            each_turn()
        if cancel.is_set():
            end.lost = "canceled"
            return False
        try:
            data = recv(1 << 16)
        except TimeoutError:
            if time.monotonic() - idle_since > read_timeout:
                end.lost = f"no data from the worker for {read_timeout:.0f} s"
                return False
            continue
        if not data:
            return True
        idle_since = time.monotonic()
        put(data)


def _receptor_command(worker: Worker, node: Any, command: str,
                      timeout: float) -> tuple[int, str, str]:
    """One allowed command as signed work on `worker`'s node: (exit status, output, detail)."""
    import io

    from coophost.deploy.receptor import UNIT_SUCCEEDED, exit_status

    try:
        node.wait_route(worker.name)
        unit = node.submit(worker.name, io.BytesIO(b""), command)
    except (OSError, RuntimeError, ValueError) as exc:
        raise HostUnreachable(f"worker {worker.name}: receptor refused {command!r}: "
                              f"{exc}") from exc
    try:
        chunks: list[bytes] = []
        end = StreamEnd()
        with node.results(unit) as sock:
            if not relay(sock.recv, chunks.append, threading.Event(), end, timeout):
                raise HostUnreachable(f"worker {worker.name}: {command!r} over receptor: "
                                      f"{end.lost}")
        state = node.status(unit)
        status = exit_status(state)
    except (OSError, RuntimeError, ValueError) as exc:
        raise HostUnreachable(f"worker {worker.name}: receptor failed: {exc}") from exc
    finally:
        node.release(unit)
    if status is None:  # no "exit status N": receptor's state says
        status = 0 if state.get("State") == UNIT_SUCCEEDED else 1
    return status, b"".join(chunks).decode(errors="replace"), str(state.get("Detail", ""))


def worker_versions(worker: Worker, known_hosts: Path, node: Any = None) -> dict[str, str]:
    """The worker's ansible-core, ansible-runner and mitogen versions (and its Python).

    Over receptor when `node` (the controller's) is given and the worker is a receptor one.
    """
    status, out, err = _worker_command(worker, known_hosts, "coophost-worker versions",
                                       node=node)
    if status != 0:
        raise HostUnreachable(f"worker {worker.name}: the version query failed "
                              f"(exit {status}): {err.strip()[:300]}")
    try:
        data = json.loads(out)
    except json.JSONDecodeError as exc:
        raise HostUnreachable(f"worker {worker.name}: the version query said {out[:200]!r}") \
            from exc
    return {str(k): str(v) for k, v in data.items()}


def worker_info(worker: Worker, known_hosts: Path, node: Any = None) -> dict[str, Any]:
    """`ansible-runner worker --worker-info` of the worker (runner version, CPU, memory)."""
    import yaml

    status, out, err = _worker_command(worker, known_hosts, "ansible-runner worker --worker-info",
                                       node=node)
    if status != 0:
        raise HostUnreachable(f"worker {worker.name}: --worker-info failed (exit {status}): "
                              f"{err.strip()[:300]}")
    data = yaml.safe_load(out)
    return data if isinstance(data, dict) else {"output": out.strip()}


# -- the wheelhouse ---------------------------------------------------------------------------
def build_wheelhouse(target: Path, python_version: str = "3.11") -> list[str]:
    """Download wheels of the controller's exact versions (and their dependencies) into `target`.

    For Debian workers (x86_64, CPython `python_version`); returns the pins ("name==version").
    """
    pins = [f"{name}=={version}" for name, version in controller_versions().items()]
    missing = [p for p in pins if p.endswith("==")]
    if missing:
        raise ConfigError("the controller lacks " + ", ".join(p[:-2] for p in missing),
                          hint="pip install 'coophost[fast]' (mitogen) first")
    target.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(target),
            "--only-binary=:all:", "--python-version", python_version,
            "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
            "--platform", "linux_x86_64", "--implementation", "cp", *pins]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    if proc.returncode != 0:
        raise ConfigError(f"pip download of the controller's versions failed: "
                          f"{proc.stderr.strip()[-600:]}")
    return pins


# -- routing ----------------------------------------------------------------------------------
class WorkerSlots:
    """How many jobs each worker runs right now; hands out the least loaded free worker."""

    def __init__(self) -> None:
        self.running: dict[str, int] = {}
        self._cond = threading.Condition()

    def acquire(self, candidates: list[Worker], cancel: threading.Event) -> Worker | None:
        """The least loaded candidate with a free slot; waits for one (None once canceled)."""
        with self._cond:
            while not cancel.is_set():
                chosen = least_loaded(candidates, self.running)
                if chosen is not None:
                    self.running[chosen.name] = self.running.get(chosen.name, 0) + 1
                    return chosen
                self._cond.wait(0.5)
        return None

    def release(self, worker: Worker) -> None:
        """A job of `worker` ended."""
        with self._cond:
            self.running[worker.name] -= 1
            self._cond.notify_all()


class RoutingExecutor:
    """Each job to a worker serving its hosts, or to the local executor when none serves them.

    A job's hosts are split by the workers that serve them (one job per group); a host no
    worker serves runs locally. The versions of each worker are checked once per deploy,
    before its first job: a worker whose ansible-core, ansible-runner or mitogen differ from
    the controller's gets no job (its hosts are unreachable, naming the mismatch).
    """

    def __init__(self, local: Executor, remote: RemoteExecutor, workers: list[Worker],
                 entries: Mapping[str, HostEntry]) -> None:
        self.local = local
        self.remote = remote
        self.workers = workers
        self.entries = entries
        self.slots = WorkerSlots()
        if remote is not None:  # the mesh of the controller's receptor node
            remote.receptor_workers = [w for w in workers if w.transport == "receptor"]
        self._checked: dict[str, str] = {}  # worker -> "" (fit) or why it is refused
        self._check_lock = threading.Lock()

    def route(self, hosts: list[str]) -> dict[tuple[str, ...], list[str]]:
        """Hosts grouped by the names of the workers serving them (() for the controller)."""
        groups: dict[tuple[str, ...], list[str]] = {}
        for host in hosts:
            found = serving(host, self.entries[host].groups, self.workers)
            groups.setdefault(tuple(w.name for w in found), []).append(host)
        return groups

    def _refusal(self, worker: Worker) -> str:
        with self._check_lock:
            if worker.name not in self._checked:
                try:
                    node = (self.remote.receptor_node() if worker.transport == "receptor"
                            else None)
                    found = worker_versions(worker, self.remote.known_hosts, node)
                    wrong = version_mismatches(controller_versions(), found)
                    self._checked[worker.name] = (
                        f"worker {worker.name} refused: versions differ: " + ", ".join(wrong)
                        if wrong else "")
                except CoophostError as exc:  # unreachable, or no receptor node here
                    self._checked[worker.name] = f"worker {worker.name}: {exc.message}"
            return self._checked[worker.name]

    def run_hosts(self, hosts: list[str], sink: EventSink, cancel: threading.Event,
                  done: OutcomeSink | None = None) -> dict[str, HostOutcome]:
        """Run `hosts`: locally or on their workers, each group at once; each host's outcome.

        `done` gets each host that converges the moment it does (as LocalExecutor's).
        """
        from concurrent.futures import ThreadPoolExecutor

        groups = [(names, chunk) for names, group in self.route(hosts).items()
                  for chunk in spread(group, len(names))]
        outcomes: dict[str, HostOutcome] = {}
        with ThreadPoolExecutor(max_workers=len(groups) or 1) as pool:
            for found in pool.map(lambda g: self._run_group(g[0], g[1], sink, cancel, done),
                                  groups):
                outcomes.update(found)
        return {h: outcomes[h] for h in hosts}

    def _run_group(self, names: tuple[str, ...], group: list[str], sink: EventSink,
                   cancel: threading.Event, done: OutcomeSink | None = None
                   ) -> dict[str, HostOutcome]:
        if not names:
            return self.local.run_hosts(group, sink, cancel, done)
        candidates = [w for w in self.workers if w.name in names]
        refusals = {w.name: self._refusal(w) for w in candidates}
        fit = [w for w in candidates if not refusals[w.name]]
        if not fit:
            why = "; ".join(refusals.values())
            return {host: HostOutcome(host, "unreachable", _counts(unreachable=1),
                                      f"no worker serving it can run it: {why}")
                    for host in group}
        worker = self.slots.acquire(fit, cancel)
        if worker is None:
            return {host: HostOutcome(host, "canceled", _counts(), "canceled before it started")
                    for host in group}
        try:
            return self.remote.run_job(worker, group, sink, cancel, done)
        except CoophostError as exc:  # the job could not be built (a host without a key file)
            return {host: HostOutcome(host, "failed", _counts(),
                                      f"worker {worker.name}: {exc.message}") for host in group}
        finally:
            self.slots.release(worker)


def spread(hosts: list[str], workers: int) -> list[list[str]]:
    """A group's hosts as one job per worker that may run them (all on the controller: one).

    Pure. Each job takes the least loaded worker when it starts, so the jobs of a deploy that
    two workers serve run on both, and a cut transport loses only the hosts of its own job.
    """
    count = max(1, min(workers, len(hosts)))
    return [hosts[i::count] for i in range(count)]


def _counts(unreachable: int = 0) -> dict[str, int]:
    return {"ok": 0, "changed": 0, "failed": 0, "unreachable": unreachable, "tasks": 0}


# -- one job on a worker ----------------------------------------------------------------------
@dataclass
class StreamEnd:
    """How the worker's stream ended, as the controller saw it."""

    lost: str = ""  # why the transport is taken as lost ("" when it ended normally)
    exit_status: int | None = None
    stderr: str = ""
    hosts: tuple[str, ...] = ()  # the job's hosts (recorded with a receptor unit)


class RemoteExecutor:
    """One host job at a time on a given worker (RoutingExecutor picks the worker)."""

    def __init__(self, inventory: Path, entries: Mapping[str, HostEntry], *,
                 check: bool = False, mitogen: bool = False, vault: VaultAccess | None = None,
                 forks: int | None = None, strategy: str = "linear",
                 read_timeout: float = READ_TIMEOUT, keepalive: int = KEEPALIVE_SECONDS,
                 playbook: str = "site.yml", extravars: Mapping[str, Any] | None = None,
                 run: RunContext | None = None) -> None:
        self.inventory = inventory
        self.run = run or RunContext()  # the deploy's run, recorded with a receptor unit
        self.playbook = playbook  # a playbook of playbooks/ (site.yml, or the fast path's)
        self.extravars = dict(extravars or {})  # plain data only
        self.known_hosts = inventory / KNOWN_HOSTS_FILE
        self.entries = entries
        self.check = check
        self.mitogen = mitogen
        self.vault = vault or VaultAccess()
        self.forks = forks
        self.strategy = strategy
        self.read_timeout = read_timeout
        self.keepalive = keepalive
        self.receptor_workers: list[Worker] = []  # RoutingExecutor sets them (the mesh)
        self._node: Any = None  # the controller's receptor node, started for the first job
        self._node_lock = threading.Lock()

    def receptor_node(self) -> Any:
        """The controller's receptor node for this deploy (coophost.deploy.receptor.Node)."""
        import atexit

        from coophost.deploy.receptor import Node
        from coophost.layout import STATE_DIR

        with self._node_lock:
            if self._node is None:
                node = Node(self.inventory / STATE_DIR,
                            [(w.connection.address, w.receptor_port)
                             for w in self.receptor_workers])
                node.start([(w.name, w.connection.address) for w in self.receptor_workers])
                atexit.register(node.stop)
                self._node = node
            return self._node

    def _carry_receptor(self, worker: Worker, remote: str, stream: Any, write_end: int,
                        cancel: threading.Event, end: StreamEnd) -> None:
        """Submit the job as signed work to the worker's node; pour the unit's output.

        The unit's ID is recorded (`units_dir`) until its output was read whole and the unit
        released, so a controller that went away midway leaves a record of what to re-attach.
        """
        from coophost.deploy.receptor import exit_status, job_params

        job_id = remote.rsplit("/", 1)[1]
        unit = ""
        try:
            node = self.receptor_node()
            node.wait_route(worker.name)
            unit = node.submit(worker.name, stream,
                               job_params(worker.jobs_dir, job_id, self.keepalive))
            record_unit(self.inventory, job_id, worker.name, unit, end.hosts,
                        self.run.for_hosts(end.hosts))
            with node.results(unit) as sock:
                self._pour_socket(sock, write_end, cancel, end)
            if cancel.is_set() and end.lost == "canceled":
                node.command(f"work cancel {unit}")
            if not end.lost:
                end.exit_status = exit_status(node.status(unit))
                node.release(unit)
                forget_unit(self.inventory, job_id)
        except HostUnreachable as exc:
            end.lost = exc.message
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            end.lost = f"receptor failed: {type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(OSError):
                os.close(write_end)

    def _relay(self, recv: Callable[[int], bytes], write_end: int, cancel: threading.Event,
               end: StreamEnd, each_turn: Callable[[], None] | None = None) -> bool:
        """Copy what `recv` returns into `write_end` until its end (True); see `relay`."""
        return relay(recv, lambda data: os.write(write_end, data), cancel, end,
                     self.read_timeout, each_turn)

    def _pour_socket(self, sock: Any, write_end: int, cancel: threading.Event,
                     end: StreamEnd) -> None:
        self._relay(sock.recv, write_end, cancel, end)

    def run_job(self, worker: Worker, hosts: list[str], sink: EventSink,
                cancel: threading.Event, done: OutcomeSink | None = None
                ) -> dict[str, HostOutcome]:
        """Stream the job of `hosts` to `worker`, process what comes back, split per host.

        A host whose last task came back before the transport was lost converged: `done`
        gets it then, and it stays ok; the others of a lost job are "unknown".
        """
        import ansible_runner

        job_id = secrets.token_hex(16)
        remote = f"{worker.jobs_dir}/{job_id}"
        events = JobEvents(hosts, sink, with_diff=self.check, report=done)
        with private_folder(JOB_FOLDER_PREFIX) as sending, \
                private_folder(JOB_FOLDER_PREFIX) as receiving, \
                tempfile.TemporaryFile(dir=sending) as stream:
            kwargs = self.job_folder(sending / "job", remote, hosts)
            ansible_runner.run(streamer="transmit", _output=stream,
                               private_data_dir=str(sending / "job"), ident=job_id, **kwargs)
            shutil.rmtree(sending / "job")  # the key and vault password: sent, not kept
            stream.seek(0)
            read_end, write_end = os.pipe()
            end = StreamEnd(hosts=tuple(hosts))
            carry = self._carry_receptor if worker.transport == "receptor" else self._carry
            pump = threading.Thread(target=carry, daemon=True, name=f"job-{worker.name}",
                                    args=(worker, remote, stream, write_end, cancel, end))
            pump.start()
            with os.fdopen(read_end, "rb") as incoming:
                processor = ansible_runner.run(
                    streamer="process", _input=incoming, private_data_dir=str(receiving),
                    ident=job_id, quiet=True, event_handler=events.on_event,
                    artifacts_handler=_scrub_artifacts)
            pump.join()
            artifacts = receiving / "artifacts" / job_id
            status_file, rc_file = artifacts / "status", artifacts / "rc"
            status = status_file.read_text().strip() if status_file.is_file() else ""
            rc_text = rc_file.read_text().strip() if rc_file.is_file() else ""
            _keep_for_inspection(receiving)
        if cancel.is_set() and not status:
            return {h: events.converged.get(h) or HostOutcome(
                        h, "canceled", _counts(), f"canceled while running on worker {worker.name}")
                    for h in hosts}
        if not status:
            why = end.lost or (f"the worker ended (exit {end.exit_status}) before sending its "
                               f"results: {end.stderr.strip()[-300:]}"
                               if end.exit_status else
                               f"the stream ended with status {processor.status}")
            return {h: events.converged.get(h) or HostOutcome(
                        h, "unknown", _counts(), f"worker {worker.name}: {why}; {UNKNOWN_HINT}",
                        output="\n".join(events.stdout))
                    for h in hosts}
        result = PlaybookResult(status=status, rc=int(rc_text) if rc_text.isdigit() else 1,
                                stats=events.stats, stdout="\n".join(events.stdout))
        return events.outcomes(result)

    def _carry(self, worker: Worker, remote: str, stream: Any, write_end: int,
               cancel: threading.Event, end: StreamEnd) -> None:
        """Send the job over a pinned SSH channel and pour the worker's stream into the pipe."""
        from coophost.ssh import connect

        command = (f"ansible-runner worker --delete --keepalive-seconds {self.keepalive} "
                   f"--private-data-dir {remote}")
        try:
            with connect(worker.job_connection, self.known_hosts) as client:
                transport = client.get_transport()
                assert transport is not None
                transport.set_keepalive(self.keepalive)
                channel = transport.open_session()
                channel.settimeout(1.0)
                channel.exec_command(command)
                while chunk := stream.read(1 << 16):
                    channel.sendall(chunk)
                channel.shutdown_write()
                self._pour(channel, write_end, cancel, end)
        except HostUnreachable as exc:
            end.lost = exc.message
        except (TimeoutError, OSError, EOFError) as exc:
            end.lost = f"SSH failed: {exc}"
        except Exception as exc:  # paramiko's SSHException and its kin
            end.lost = f"SSH failed: {type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(OSError):
                os.close(write_end)

    def _pour(self, channel: Any, write_end: int, cancel: threading.Event,
              end: StreamEnd) -> None:
        err = bytearray()

        def drain() -> None:
            while channel.recv_stderr_ready():
                err.extend(channel.recv_stderr(1 << 16))

        if not self._relay(channel.recv, write_end, cancel, end, each_turn=drain):
            channel.close()
        if not end.lost:
            deadline = time.monotonic() + 5
            while not channel.exit_status_ready() and time.monotonic() < deadline:
                time.sleep(0.05)
            if channel.exit_status_ready():
                end.exit_status = channel.recv_exit_status()
            else:
                end.lost = "the SSH channel closed with no exit status"
        drain()
        end.stderr = err.decode(errors="replace")

    def job_folder(self, folder: Path, remote: str, hosts: list[str]) -> dict[str, Any]:
        """Write the job's private data folder (module docstring); return runner's arguments."""
        root = content_root()
        project = folder / "project"
        project.mkdir(parents=True, mode=0o700)
        shutil.copy2(root / "ansible.cfg", project / "ansible.cfg")
        for name in ("playbooks", "roles", "services"):
            shutil.copytree(root / name, project / name, ignore=CONTENT_IGNORE)
        for name, source in collection_paths().items():
            namespace, _, collection = name.partition(".")
            shutil.copytree(source, project / "collections" / "ansible_collections" / namespace
                            / collection, ignore=CONTENT_IGNORE)
        inventory = folder / "inventory"
        (inventory / HOST_VARS_DIR).mkdir(parents=True, mode=0o700)
        shutil.copy2(self.inventory / HOSTS_FILE, inventory / HOSTS_FILE)
        for host in hosts:
            source = self.inventory / HOST_VARS_DIR / f"{host}.yml"
            if source.is_file():
                shutil.copy2(source, inventory / HOST_VARS_DIR / source.name)
        if (self.inventory / "group_vars").is_dir():
            shutil.copytree(self.inventory / "group_vars", inventory / "group_vars")
        keys = folder / "keys"
        keys.mkdir(mode=0o700)
        overrides: dict[str, dict[str, str]] = {}
        carried: dict[str, str] = {}
        for host in hosts:
            key = self.entries[host].key_file
            if not key:
                raise ConfigError(f"host {host}: a worker reaches it only with an explicit "
                                  "ansible_ssh_private_key_file in hosts.yml")
            if key not in carried:
                name = f"key{len(carried)}"
                shutil.copyfile(Path(key).expanduser(), keys / name)
                (keys / name).chmod(stat.S_IRUSR)
                carried[key] = f"{remote}/keys/{name}"
            overrides[host] = {"ansible_ssh_private_key_file": carried[key]}
        (inventory / OVERRIDES_FILE).write_text(json.dumps({"all": {"hosts": overrides}}))
        shutil.copy2(self.inventory / KNOWN_HOSTS_FILE, folder / "known_hosts")
        env = {
            "ANSIBLE_CONFIG": f"{remote}/project/ansible.cfg",
            "ANSIBLE_ROLES_PATH": f"{remote}/project/roles:{remote}/project/services",
            "ANSIBLE_COLLECTIONS_PATH": f"{remote}/project/collections",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": f"{remote}/facts",
            "ANSIBLE_HOME": f"{remote}/ansible-home",  # nothing of the job outside its folder
            "ANSIBLE_LOCAL_TEMP": f"{remote}/ansible-tmp",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_SSH_ARGS": worker_ssh_args(remote),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": f"{remote}/cp",
            "ANSIBLE_STRATEGY": f"mitogen_{self.strategy}" if self.mitogen else self.strategy,
        }
        password = self._vault_password()
        if password is not None:
            (folder / "vault").mkdir(mode=0o700)
            secret = folder / "vault" / "password"
            secret.write_text(password + "\n")
            secret.chmod(stat.S_IRUSR)
            env["ANSIBLE_VAULT_PASSWORD_FILE"] = f"{remote}/vault/password"
        return {
            "playbook": f"playbooks/{self.playbook}", "limit": ",".join(hosts),
            "extravars": {**self.extravars, "ansible_host_key_checking": True,
                          "ansible_ssh_host_key_checking": True,
                          "ansible_ssh_args": worker_ssh_args(remote)},
            "envvars": env, "forks": self.forks or len(hosts),
            "cmdline": "--check --diff" if self.check else None,
            "settings": {"suppress_ansible_output": True},
        }

    def _vault_password(self) -> str | None:
        path = self.vault.password_file
        if path is not None:
            if os.access(path, os.X_OK):  # a vault client script, as Ansible would run it
                proc = subprocess.run([str(path)], capture_output=True, text=True, check=False,
                                      timeout=60)
                if proc.returncode != 0:
                    raise ConfigError(f"{path}: the vault password client exited "
                                      f"{proc.returncode}")
                return proc.stdout.splitlines()[0] if proc.stdout else None
            lines = path.read_text().splitlines()
            return lines[0] if lines else None
        if self.vault.password_env:
            return os.environ.get(self.vault.password_env) or None
        return None


# -- receptor work units of jobs under way ------------------------------------------------------
UNITS_DIR = "receptor/units"


def units_dir(inventory: Path) -> Path:
    """Where the work unit of each receptor job under way is recorded (state, git-ignored)."""
    from coophost.layout import STATE_DIR

    return inventory / STATE_DIR / UNITS_DIR


def record_unit(inventory: Path, job_id: str, worker: str, unit: str,
                hosts: tuple[str, ...] = (), run: Mapping[str, Any] | None = None) -> None:
    """Record that `job_id` (of `hosts`) runs as receptor unit `unit` on `worker` (atomic).

    `run`: the deploy run and each host's job record (RunContext.for_hosts), so that a
    re-attach can record the hosts in state.db.
    """
    from coophost.fsutil import atomic_write

    folder = units_dir(inventory)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(folder / f"{job_id}.json",
                 json.dumps({"job": job_id, "worker": worker, "unit": unit,
                             "hosts": list(hosts), **(run or {})}), mode=0o600)


def forget_unit(inventory: Path, job_id: str) -> None:
    """The job's unit was read whole and released."""
    (units_dir(inventory) / f"{job_id}.json").unlink(missing_ok=True)


def recorded_units(inventory: Path) -> list[dict[str, Any]]:
    """The receptor units recorded and not yet read whole (a controller went away midway)."""
    folder = units_dir(inventory)
    found: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(path.read_text())
            if isinstance(data, dict) and {"job", "worker", "unit"} <= set(data):
                run_id = data.get("run_id")
                applied = data.get("applied")
                found.append({**{k: str(data[k]) for k in ("job", "worker", "unit")},
                              "hosts": [str(h) for h in data.get("hosts") or []],
                              "run_id": run_id if isinstance(run_id, int) else None,
                              "applied": applied if isinstance(applied, dict) else {}})
    return found


@dataclass
class Reattached:
    """What re-attaching to a recorded unit found."""

    record: dict[str, Any]
    status: str  # ansible-runner's status of the job ("" when the results could not be had)
    stats: dict[str, Any]  # the play's stats event data ({} without one)
    why: str = ""  # why there is no status
    node: Any = None  # the controller node it started (the caller stops it)
    # Each host's outcome, read from the job's events as a deploy reads them ({} without status)
    outcomes: dict[str, HostOutcome] = field(default_factory=dict)


def reattach(inventory: Path, workers: list[Worker], record: dict[str, Any], receiving: Path,
             read_timeout: float = READ_TIMEOUT) -> Reattached:
    """Read a recorded unit's results from its start into `ansible-runner process`.

    After a controller went away midway: its node, started again on the same data folder,
    takes up the unit where it left it and streams the worker's whole output. The unit is
    released and its record dropped once the output was read whole (the job's status came).
    """
    import ansible_runner

    from coophost.deploy.receptor import Node
    from coophost.layout import STATE_DIR

    mesh = [w for w in workers if w.transport == "receptor"]
    node = Node(inventory / STATE_DIR, [(w.connection.address, w.receptor_port) for w in mesh])
    node.start([(w.name, w.connection.address) for w in mesh])
    job_id, unit = record["job"], record["unit"]
    events = JobEvents(list(record.get("hosts") or []), lambda *_: None)

    end = StreamEnd()
    read_end, write_end = os.pipe()

    def pour() -> None:
        executor = RemoteExecutor(inventory, {}, read_timeout=read_timeout)
        try:
            node.wait_route(record["worker"])
            with node.results(unit) as sock:
                executor._pour_socket(sock, write_end, threading.Event(), end)
        except (HostUnreachable, OSError, RuntimeError) as exc:
            end.lost = str(exc)
        finally:
            with contextlib.suppress(OSError):
                os.close(write_end)

    pump = threading.Thread(target=pour, daemon=True, name=f"reattach-{unit}")
    pump.start()
    receiving.mkdir(parents=True, exist_ok=True, mode=0o700)
    with os.fdopen(read_end, "rb") as incoming:
        ansible_runner.run(streamer="process", _input=incoming, private_data_dir=str(receiving),
                           ident=job_id, quiet=True, event_handler=events.on_event,
                           artifacts_handler=_scrub_artifacts)
    pump.join()
    artifacts = receiving / "artifacts" / job_id
    status_file, rc_file = artifacts / "status", artifacts / "rc"
    status = status_file.read_text().strip() if status_file.is_file() else ""
    outcomes: dict[str, HostOutcome] = {}
    if status:
        rc_text = rc_file.read_text().strip() if rc_file.is_file() else ""
        outcomes = events.outcomes(PlaybookResult(
            status=status, rc=int(rc_text) if rc_text.isdigit() else 1, stats=events.stats,
            stdout="\n".join(events.stdout)))
        node.release(unit)
        forget_unit(inventory, job_id)
    return Reattached(record, status, dict(events.stats),
                      "" if status else (end.lost or "no status came"), node, outcomes)


def collection_paths() -> dict[str, Path]:
    """Where the controller's copies of JOB_COLLECTIONS are installed."""
    import importlib.util

    found = {}
    for name in JOB_COLLECTIONS:
        spec = importlib.util.find_spec(f"ansible_collections.{name}")
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"the controller lacks the collection {name}",
                              hint="install the `ansible` package (or that collection)")
        found[name] = Path(next(iter(spec.submodule_search_locations)))
    return found


def worker_ssh_args(remote: str) -> str:
    """ansible.cfg's ssh_args, then the pins (the job's own known_hosts) the worker must use."""
    import configparser

    config = configparser.ConfigParser(interpolation=None)
    config.read(content_root() / "ansible.cfg")
    shipped = config.get("ssh_connection", "ssh_args", fallback="")
    return (f"{shipped} -o StrictHostKeyChecking=yes -o UserKnownHostsFile={remote}/known_hosts "
            "-o GlobalKnownHostsFile=/dev/null -o UpdateHostKeys=no -o IdentitiesOnly=yes"
            ).strip()


def _scrub_artifacts(artifact_dir: str) -> None:
    """Drop what the worker's artifacts echo of the job's environment, and its task events.

    ansible-runner's `command` artifact holds the environment the play ran with; task events
    are not kept for local jobs either (only the stats event).
    """
    folder = Path(artifact_dir)
    command = folder / "command"
    if command.is_file():
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(command.read_text())
            if isinstance(data, dict):
                data.pop("env", None)
                command.write_text(json.dumps(data))
    for name in ("env", "ssh_key_data"):
        (folder / name).unlink(missing_ok=True)
    events = folder / "job_events"
    for event in events.glob("*.json") if events.is_dir() else ():
        try:
            kind = json.loads(event.read_text()).get("event")
        except (ValueError, OSError, AttributeError):
            kind = None
        if kind != "playbook_on_stats":
            event.unlink()
