"""Receptor: the optional transport from the controller to its workers (execution nodes).

A worker with `coophost_worker_transport: receptor` runs Debian's receptor as a node of the
co-op's mesh (roles/worker, tasks/receptor.yml): it listens only with TLS, requires a client
certificate from the co-op's CA, and runs the one work type `coophost-job` (the worker's
forced command: `ansible-runner worker --delete` into a job folder) only for work signed with
the controller's signing key (`verifysignature: true`). Unsigned work is refused.

On the controller, coophost runs its own receptor node while a deploy needs one (`Node`): a
TLS client peering to each receptor worker, a control socket in the co-op's state folder, and
the signing key. The job's transmit stream is submitted as signed work to the worker node, and
the unit's results (the worker's stream) are poured into `ansible-runner process`, as the SSH
transport pours its channel.

The PKI lives in `<inventory>/.coophost/receptor/` (git-ignored state, 0700, keys 0600): the
CA (its key never leaves the controller), one certificate per node with the receptor node-ID
name (and the address the controller dials), and the RSA work-signing key pair. `ensure_pki`
makes what is missing with receptor's own `--cert-init`/`--cert-makereq`/`--cert-signreq`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coophost.errors import ConfigError, EnvironmentProblem, HostUnreachable
from coophost.fsutil import atomic_write
from coophost.registry.workers import NODE_ID_RE as NODE_RE

RECEPTOR = "receptor"
CONTROLLER_NODE = "coophost-controller"
WORKTYPE = "coophost-job"
# receptor's work states: 0 pending, 1 running, 2 succeeded, 3 failed, 4 canceled
UNIT_SUCCEEDED, UNIT_FAILED = 2, 3
DEFAULT_PORT = 27199
TLS_NAME = "coophost-mesh"
PKI_DIR = "receptor"
CONNECT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Pki:
    """Where the co-op's receptor PKI files are on the controller."""

    folder: Path

    @property
    def ca_cert(self) -> Path:
        """The co-op CA certificate."""
        return self.folder / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The CA's private key (never leaves the controller)."""
        return self.folder / "ca.key"

    @property
    def signing_key(self) -> Path:
        """The work-signing private key."""
        return self.folder / "work-signing.key"

    @property
    def signing_public(self) -> Path:
        """The work-signing public key (workers verify with it)."""
        return self.folder / "work-signing.pub"

    def node_cert(self, node: str) -> Path:
        """A node's certificate."""
        return self.folder / "nodes" / f"{node}.crt"

    def node_key(self, node: str) -> Path:
        """A node's private key."""
        return self.folder / "nodes" / f"{node}.key"


def check_node_id(node: str) -> str:
    """`node` if it is a plain receptor node ID (letters, digits, '.', '_', '-'), else raise."""
    if not NODE_RE.match(node):
        raise ConfigError(f"{node!r} cannot be a receptor node ID",
                          hint="letters, digits, '.', '_' and '-', at most 63")
    return node


def receptor_binary() -> str:
    """The receptor executable on the controller (scripts/setup-host installs it)."""
    found = shutil.which(RECEPTOR)
    if not found:
        raise EnvironmentProblem("receptor is not installed on this controller",
                                 hint="run scripts/setup-host (it installs Debian's receptor)")
    return found


def san_args(address: str) -> list[str]:
    """The cert-makereq arguments naming `address` (an IP address or a DNS name). Pure."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return [f"dnsname={address}"]
    return [f"ipaddress={address}"]


def _receptor(*args: str) -> None:
    proc = subprocess.run([receptor_binary(), *args], capture_output=True, text=True,
                          check=False, timeout=120)
    if proc.returncode != 0:
        raise EnvironmentProblem(f"receptor {args[0]} failed: "
                                 f"{(proc.stderr or proc.stdout).strip()[-300:]}")


def ensure_pki(folder: Path, nodes: Iterable[tuple[str, str]], co_op: str = "coophost"
               ) -> Pki:
    """Make what is missing of the PKI in `folder`: CA, signing pair, one cert per node.

    `nodes`: (node ID, address the controller dials, "" for the controller's own node).
    A node whose certificate exists is left as it is. Private keys are 0600, the folder 0700.
    """
    pki = Pki(folder)
    (folder / "nodes").mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    (folder / "nodes").chmod(0o700)
    old = os.umask(0o077)
    try:
        if not pki.ca_cert.is_file() or not pki.ca_key.is_file():
            _receptor("--cert-init", f"commonname={co_op} receptor CA", "bits=4096",
                      f"outcert={pki.ca_cert}", f"outkey={pki.ca_key}")
        if not pki.signing_key.is_file() or not pki.signing_public.is_file():
            _signing_pair(pki)
        for node, address in nodes:
            check_node_id(node)
            if pki.node_cert(node).is_file() and pki.node_key(node).is_file():
                continue
            request = folder / "nodes" / f"{node}.csr"
            _receptor("--cert-makereq", "bits=2048", f"commonname={node}", f"nodeid={node}",
                      *(san_args(address) if address else []), f"outreq={request}",
                      f"outkey={pki.node_key(node)}")
            _receptor("--cert-signreq", f"req={request}", f"cacert={pki.ca_cert}",
                      f"cakey={pki.ca_key}", f"outcert={pki.node_cert(node)}", "verify=yes")
            request.unlink()
    finally:
        os.umask(old)
    for key in (pki.ca_key, pki.signing_key, *(folder / "nodes").glob("*.key")):
        key.chmod(0o600)
    return pki


def _signing_pair(pki: Pki) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    atomic_write(pki.signing_key, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()), mode=0o600)
    atomic_write(pki.signing_public, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


# -- configs (pure) ---------------------------------------------------------------------------
def worker_config(node: str, *, port: int, bind: str, tls_dir: str, datadir: str,
                  socket_path: str, command: str, signing_public: str) -> list[dict[str, Any]]:
    """A worker node's receptor.conf: TLS listener only, client certs required, signed work.

    The same structure roles/worker/templates/receptor.conf.j2 writes. Pure.
    """
    return [
        {"node": {"id": check_node_id(node), "datadir": datadir}},
        {"log-level": "info"},
        {"tls-server": {"name": TLS_NAME, "cert": f"{tls_dir}/node.crt",
                        "key": f"{tls_dir}/node.key", "requireclientcert": True,
                        "clientcas": f"{tls_dir}/ca.crt", "mintls13": True}},
        {"tcp-listener": {"port": port, "bindaddr": bind, "tls": TLS_NAME}},
        {"control-service": {"service": "control", "filename": socket_path,
                             "permissions": "0600"}},
        {"work-verification": {"publickey": signing_public}},
        {"work-command": {"worktype": WORKTYPE, "command": command,
                          "allowruntimeparams": True, "verifysignature": True}},
    ]


def controller_config(pki: Pki, peers: Iterable[tuple[str, int]], datadir: Path,
                      socket_path: Path) -> list[dict[str, Any]]:
    """The controller node's config: TLS client to each worker, a local socket, signing. Pure."""
    return [
        {"node": {"id": CONTROLLER_NODE, "datadir": str(datadir)}},
        {"log-level": "warning"},
        {"tls-client": {"name": TLS_NAME, "cert": str(pki.node_cert(CONTROLLER_NODE)),
                        "key": str(pki.node_key(CONTROLLER_NODE)), "rootcas": str(pki.ca_cert),
                        "mintls13": True}},
        *({"tcp-peer": {"address": f"{address}:{port}", "tls": TLS_NAME, "redial": True}}
          for address, port in sorted(set(peers))),
        {"control-service": {"service": "control", "filename": str(socket_path),
                             "permissions": "0600"}},
        {"work-signing": {"privatekey": str(pki.signing_key), "tokenexpiration": "1h"}},
    ]


def job_params(jobs_dir: str, job_id: str, keepalive: int) -> str:
    """The runtime params of a job's work unit: the forced command's job line. Pure."""
    if not re.fullmatch(r"[0-9a-f]{16,64}", job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return (f"ansible-runner worker --delete --keepalive-seconds {int(keepalive)} "
            f"--private-data-dir {jobs_dir}/{job_id}")


# -- the controller's node --------------------------------------------------------------------
class Node:
    """The controller's receptor node, run by coophost for as long as a deploy needs it."""

    def __init__(self, state: Path, peers: Iterable[tuple[str, int]], co_op: str = "coophost"
                 ) -> None:
        self.folder = state / PKI_DIR
        self.peers = sorted(set(peers))
        self.co_op = co_op
        self.socket = control_socket_path(self.folder)
        self.datadir = self.folder / "data"
        self.process: subprocess.Popen[bytes] | None = None
        self.config: Path | None = None

    def start(self, workers: Iterable[tuple[str, str]]) -> None:
        """Start the node (unless one answers on the socket already) with the PKI it needs."""
        pki = ensure_pki(self.folder, [(CONTROLLER_NODE, ""), *workers], self.co_op)
        config = self.folder / "controller.json"
        atomic_write(config, json.dumps(controller_config(pki, self.peers, self.datadir,
                                                          self.socket), indent=1), mode=0o600)
        self.config = config
        if self.answers():  # a node a killed coophost left running: reused, stopped at the end
            self.sweep()
            return
        self.socket.unlink(missing_ok=True)
        self.datadir.mkdir(mode=0o700, exist_ok=True)
        log = open(self.folder / "controller.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.process = subprocess.Popen([receptor_binary(), "--config", str(config)],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            start_new_session=True)
        finally:
            log.close()
        atomic_write(self.folder / "controller.pid", f"{self.process.pid}\n", mode=0o600)
        deadline = time.monotonic() + 15
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise EnvironmentProblem("the controller's receptor node did not start; see "
                                         f"{self.folder / 'controller.log'}")
            time.sleep(0.2)
        self.sweep()

    def unit_folder(self, unit: str) -> Path:
        """Where this node keeps a unit of its own: its status, payload (stdin) and output."""
        return self.datadir / CONTROLLER_NODE / unit

    def sweep(self) -> None:
        """Scrub what an earlier node left of units that are over.

        A released unit's folder stays until its worker confirms the release, and a node
        stopped before that (the end of every deploy) never removes it: the job's payload
        (its SSH key and vault password) and its output would rest there. A unit refused
        before it started (unsigned work) is released. Units still to re-attach (running, or
        finished and not yet read) are left alone.
        """
        base = self.datadir / CONTROLLER_NODE
        for folder in sorted(base.iterdir()) if base.is_dir() else ():
            try:
                status = json.loads((folder / "status").read_text())
            except (OSError, ValueError):
                continue
            extra = status.get("ExtraData") or {}
            if extra.get("LocalReleased"):
                scrub_unit(folder)
            elif not extra.get("RemoteStarted") and status.get("State") == UNIT_FAILED:
                self.release(folder.name)

    def answers(self) -> bool:
        """Whether a node answers on the control socket."""
        if not self.socket.exists():
            return False
        try:
            self.command("status")
        except (OSError, RuntimeError, ValueError):
            return False
        return True

    def _connect(self, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
        """A control-socket connection past the node's greeting line."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(str(self.socket))
            if not _read_line(sock).startswith("Receptor Control"):
                raise RuntimeError("not a receptor control socket")
        except BaseException:
            sock.close()
            raise
        return sock

    def command(self, text: str) -> dict[str, Any]:
        """One control-socket command's JSON answer (RuntimeError on an ERROR answer)."""
        with contextlib.closing(self._connect()) as sock:
            sock.sendall(f"{text}\n".encode())
            return _json_answer(_read_line(sock, limit=1 << 24))

    def wait_route(self, node: str, timeout: float = CONNECT_TIMEOUT) -> None:
        """Wait until the mesh has a route to `node` (raise HostUnreachable after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            routes = self.command("status").get("RoutingTable") or {}
            if node in routes:
                return
            if time.monotonic() > deadline:
                raise HostUnreachable(f"worker {node}: no receptor route after {timeout:.0f} s "
                                      "(TLS refused, or not listening)")
            time.sleep(0.5)

    def submit(self, node: str, payload: Any, params: str, signed: bool = True) -> str:
        """Submit work of WORKTYPE to `node` (signed unless told), `payload` as its stdin.

        Its local unit ID; RuntimeError naming the node's refusal (unsigned work on a worker
        that verifies signatures: "could not verify signature").
        """
        request = {"command": "work", "subcommand": "submit", "node": node,
                   "worktype": WORKTYPE, "params": params}
        if signed:
            request["signwork"] = "true"
        with contextlib.closing(self._connect()) as sock:
            sock.sendall((json.dumps(request) + "\n").encode())
            line = _read_line(sock)
            if not line.startswith("Work unit created"):
                raise RuntimeError(f"work submit: {line.strip()[:300]}")
            created = re.search(r"with ID (\S+?)\.? ", line)
            while chunk := payload.read(1 << 16):
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
            try:
                answer = _json_answer(_read_line(sock, limit=1 << 20))
            except RuntimeError:  # refused (unsigned work): the local unit goes at once
                if created:
                    self.release(created.group(1))
                raise
        return str(answer["unitid"])

    @contextlib.contextmanager
    def results(self, unit: str, timeout: float = 1.0) -> Iterator[socket.socket]:
        """A socket streaming the unit's output from its start (recv times out: `timeout`).

        The control protocol by hand (receptorctl's buffered file cannot take a timeout): a
        greeting line, `work results UNIT 0`, one answer line, then the raw output until the
        unit has ended and all of it was sent.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(str(self.socket))
            _read_line(sock)
            sock.sendall(f"work results {unit} 0\n".encode())
            answer = _read_line(sock)
            if not answer.startswith("Streaming results"):
                raise RuntimeError(f"work results {unit}: {answer.strip()[:300]}")
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(timeout)
            yield sock
        finally:
            sock.close()

    def status(self, unit: str) -> dict[str, Any]:
        """`work status` of a unit."""
        return self.command(f"work status {unit}")

    def release(self, unit: str) -> None:
        """Release the unit here and on its worker; its payload and output go from here now.

        Receptor removes a released remote unit's folder only once the worker confirmed, and
        not at all when the node stops first (see `sweep`): the files are scrubbed here.
        """
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            self.command(f"work release {unit}")
        if re.fullmatch(r"[A-Za-z0-9_-]+", unit):
            scrub_unit(self.unit_folder(unit))

    def stop(self) -> None:
        """Stop the node: the one this object started, or the one it found running."""
        if self.process is None and self.config is not None:
            self._stop_left_over()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


    def _stop_left_over(self) -> None:
        """Stop the node of controller.pid if it is ours (its command names our config)."""
        import signal

        try:
            pid = int((self.folder / "controller.pid").read_text().strip())
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if str(self.config).encode() in command:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)


def scrub_unit(folder: Path) -> None:
    """Remove a finished unit's payload and output (its status stays for receptor)."""
    for name in ("stdin", "stdout"):
        with contextlib.suppress(OSError):
            (folder / name).unlink(missing_ok=True)


def control_socket_path(folder: Path) -> Path:
    """The controller node's control socket path.

    In its folder, or (a path too long for a unix socket: 107 bytes) in a private folder of
    the temp dir named after it.
    """
    import hashlib
    import tempfile

    path = folder / "control.sock"
    if len(os.fsencode(path.absolute())) <= 100:
        return path
    digest = hashlib.sha256(os.fsencode(folder.absolute())).hexdigest()[:16]
    short = Path(tempfile.gettempdir()) / f"coophost-receptor-{digest}"
    short.mkdir(mode=0o700, exist_ok=True)
    info = short.lstat()
    if not short.is_dir() or short.is_symlink() or info.st_uid != os.getuid() \
            or info.st_mode & 0o077:
        raise EnvironmentProblem(f"{short}: not a private folder of this user")
    return short / "control.sock"


def _read_line(sock: socket.socket, limit: int = 4096) -> str:
    """One line of the control protocol, read a byte at a time (nothing read past it)."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte or len(line) > limit:
            raise RuntimeError("the receptor control socket closed mid-answer")
        line += byte
    return line.decode(errors="replace")


def _json_answer(line: str) -> dict[str, Any]:
    """A control answer: its JSON (a dict), or RuntimeError for an ERROR line. Pure."""
    text = line.strip()
    if text.startswith("ERROR"):
        raise RuntimeError(text)
    answer = json.loads(text)
    return answer if isinstance(answer, dict) else {"answer": answer}


def exit_status(status: dict[str, Any]) -> int | None:
    """The exit status a work unit's `work status` reports ("exit status N"), if any. Pure."""
    match = re.search(r"exit status (\d+)", str(status.get("Detail", "")))
    return int(match.group(1)) if match else None


def probe(address: str, port: int, timeout: float = 5.0) -> bool:
    """Whether something accepts TCP on address:port (used by tests and `workers check`)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
