"""SSH with paramiko against pinned host keys: preflight checks of hosts.

Host keys come only from the inventory's known_hosts, and an unknown or changed key is refused
(RejectPolicy). Nothing here ever adds a key on first contact.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import paramiko
from paramiko.auth_strategy import AuthStrategy
from paramiko.config import SSHConfig
from paramiko.hostkeys import HostKeyEntry

from coophost.errors import ConfigError, HostKeyMismatch, HostUnreachable
from coophost.registry.hosts import HostEntry
from coophost.sshroute import Hop, Route

# One remote command, no member input in it: each section is introduced by a marker line.
PREFLIGHT = (
    "echo '@@os'; cat /etc/os-release; "
    "echo '@@python'; python3 -c 'import sys; print(sys.version.split()[0])'; "
    "echo '@@user'; id -un; "
    "echo '@@sudo'; if [ \"$(id -u)\" = 0 ]; then echo root; "
    "elif sudo -n true 2>/dev/null; then echo sudo; else echo none; fi; "
    "echo '@@disk'; df -Pk / | tail -n 1; "
    "echo '@@mem'; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo"
)


@dataclass
class HostReport:
    """The outcome of a preflight check of one host."""

    host: str
    address: str
    reachable: bool = False
    host_key: str = "unchecked"
    os: str = ""
    python: str = ""
    user: str = ""
    privilege: str = ""
    disk_free_gb: float = 0.0
    mem_total_mb: int = 0
    mem_available_mb: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether the host is fit to be managed."""
        return (self.reachable and self.host_key == "ok" and bool(self.python)
                and self.privilege in ("root", "sudo"))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the verdict."""
        return {**asdict(self), "ok": self.ok}


def parse_preflight(text: str) -> dict[str, str]:
    """Split the preflight output into its sections."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@@"):
            current = line[2:].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {key: "\n".join(lines).strip() for key, lines in sections.items()}


def fill_report(report: HostReport, sections: dict[str, str]) -> HostReport:
    """Read the preflight sections into `report`."""
    os_fields = dict(
        line.split("=", 1) for line in sections.get("os", "").splitlines() if "=" in line)
    name = os_fields.get("ID", "").strip('"')
    version = os_fields.get("VERSION_ID", "").strip('"')
    codename = os_fields.get("VERSION_CODENAME", "").strip('"')
    report.os = f"{name} {version}" + (f" ({codename})" if codename else "")
    report.python = sections.get("python", "")
    report.user = sections.get("user", "")
    report.privilege = sections.get("sudo", "none")
    disk = sections.get("disk", "").split()
    if len(disk) >= 4 and disk[3].isdigit():
        report.disk_free_gb = round(int(disk[3]) / 1024 / 1024, 1)
    for line in sections.get("mem", "").splitlines():
        key, _, rest = line.partition(":")
        value = int(rest.split()[0]) // 1024 if rest.split() else 0
        if key == "MemTotal":
            report.mem_total_mb = value
        elif key == "MemAvailable":
            report.mem_available_mb = value
    return report


def validate_known_hosts(path: Path) -> None:
    """Refuse (exit 2, naming the line) a known_hosts line coophost could not check a key by.

    paramiko skips such lines silently, which would leave a host with no pinned key, or fails
    with an error that names no line. A missing file pins nothing (every host is refused).
    """
    known_hosts_entries(path, strict=True)


def known_hosts_entries(path: Path, *, strict: bool) -> list[HostKeyEntry]:
    """The pinned keys of `path`; with `strict` off, lines paramiko cannot read are left out."""
    if not path.is_file():
        return []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from exc
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            try:
                entries.append(_known_hosts_entry(path, number, line))
            except ConfigError:
                if strict:
                    raise
    return entries


def _known_hosts_entry(path: Path, number: int, line: str) -> HostKeyEntry:
    where = f"{path}: line {number}"
    hint = "each line is `HOST KEYTYPE BASE64-KEY`, as `ssh-keyscan` prints them"
    if line.startswith("@"):
        raise ConfigError(f"{where}: {line.split()[0]!r} lines are not supported: coophost "
                          "pins plain host keys only", hint=hint)
    try:
        entry = HostKeyEntry.from_line(line, number)
    except Exception as exc:  # whatever paramiko or the key parser raise
        raise ConfigError(f"{where}: not a valid host key ({type(exc).__name__}: "
                          f"{str(exc)[:120]})", hint=hint) from exc
    if entry is None:
        found = line.split()
        problem = (f"key type {found[1]!r} is not one paramiko can check" if len(found) >= 3
                   else f"{len(found)} field(s), expected 3")
        raise ConfigError(f"{where}: {problem}", hint=hint)
    return entry


class _KeyOnly(AuthStrategy):
    """Stop once the host key is checked: no authentication is attempted."""

    def get_sources(self) -> Iterator[Any]:
        """No key, no password: nothing."""
        yield from ()

    def authenticate(self, transport: paramiko.Transport) -> list[Any]:
        """Nothing to try."""
        return []


@contextmanager
def _mapped_errors(host: HostEntry, known_hosts: Path) -> Iterator[None]:
    """Map paramiko's failures to coophost's errors (exit 4), naming the host."""
    where = f"{host.name} ({host.address}:{host.port})"
    try:
        yield
    except paramiko.BadHostKeyException as exc:
        raise HostKeyMismatch(
            f"{where}: host key mismatch: it offers {exc.key.get_name()} "
            f"{exc.key.fingerprint}, known_hosts pins another",
            hint=f"if the host was really rebuilt, re-pin its key in {known_hosts}") from exc
    except paramiko.AuthenticationException as exc:
        raise HostUnreachable(f"{where}: the key was not accepted ({exc})") from exc
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise HostKeyMismatch(f"{where}: no pinned host key in {known_hosts}",
                                  hint="pin its key in that file first: nothing is trusted on "
                                       "first use") from exc
        raise HostUnreachable(f"{where}: SSH failed: {exc}") from exc
    except (TimeoutError, OSError) as exc:
        raise HostUnreachable(f"{where}: unreachable: {exc}") from exc


def _pinned_client(known_hosts: Path, *, strict: bool = True) -> paramiko.SSHClient:
    """A client that trusts the keys of `known_hosts` and nothing else.

    `strict` refuses a file with a line paramiko would skip (the co-op's own known_hosts);
    a person's ~/.ssh/known_hosts may hold lines for other tools, which are left out.
    """
    client = paramiko.SSHClient()
    pinned = client.get_host_keys()
    for entry in known_hosts_entries(known_hosts, strict=strict):
        for name in entry.hostnames:
            pinned.add(name, entry.key.get_name(), entry.key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def route_of(host: HostEntry) -> Route:
    """How to reach `host`: hosts.yml's explicit settings, then ~/.ssh/config (as OpenSSH)."""
    from coophost.sshroute import config_path, host_route, load_config

    return host_route(host, load_config(config_path()))


def _keys(hop: Hop) -> Any:
    """The key_filename for paramiko: one file, a list (it tries each), or None."""
    return list(hop.key_files) or None


def _shown(host: HostEntry, hop: Hop, last: bool) -> HostEntry:
    """The entry error messages name: the host, or the jump host on its way."""
    name = host.name if last else f"{host.name}'s jump host {hop.hostname}"
    return HostEntry(name, hop.hostname, hop.port, hop.user, None)


@contextmanager
def _through_jumps(host: HostEntry, found: Route, known_hosts: Path, timeout: float, *,
                   strict: bool) -> Iterator[tuple[list[paramiko.SSHClient], Any]]:
    """Sessions to each jump host (pinned keys), and a channel to the target through them."""
    clients: list[paramiko.SSHClient] = []
    sock: Any = None
    try:
        hops = found.hops
        for index, hop in enumerate(found.jumps):
            client = _pinned_client(known_hosts, strict=strict)
            clients.append(client)
            with _mapped_errors(_shown(host, hop, False), known_hosts):
                client.connect(hop.hostname, port=hop.port, username=hop.user,
                               key_filename=_keys(hop), timeout=timeout,
                               banner_timeout=timeout, auth_timeout=timeout, sock=sock,
                               allow_agent=False, look_for_keys=False)
                transport = client.get_transport()
                if transport is None:  # pragma: no cover - connect() always sets one
                    raise paramiko.SSHException("no transport")
                following = hops[index + 1]
                sock = transport.open_channel("direct-tcpip",
                                              (following.hostname, following.port),
                                              ("127.0.0.1", 0), timeout=timeout)
        yield clients, sock
    finally:
        for client in reversed(clients):
            client.close()


def check_host_key(host: HostEntry, known_hosts: Path, timeout: float = 10.0) -> None:
    """Check the key `host` offers against `known_hosts`, before any authentication.

    Raises HostKeyMismatch or HostUnreachable (exit 4); nothing is sent to the host but the
    key exchange, so a host that is not the pinned one sees no login attempt. Jump hosts on
    the way (ProxyJump in ~/.ssh/config) are pinned too, and logged in to.
    """
    found = route_of(host)
    with _through_jumps(host, found, known_hosts, timeout, strict=True) as (_jumps, sock):
        client = _pinned_client(known_hosts)
        try:
            with _mapped_errors(_shown(host, found.target, True), known_hosts):
                client.connect(found.target.hostname, port=found.target.port,
                               username=found.target.user, timeout=timeout,
                               banner_timeout=timeout, auth_timeout=timeout, sock=sock,
                               auth_strategy=_KeyOnly(SSHConfig()))
        finally:
            client.close()


@contextmanager
def connect(host: HostEntry, known_hosts: Path, timeout: float = 10.0, *,
            personal_keys: bool = False,
            own_known_hosts: bool = False) -> Iterator[paramiko.SSHClient]:
    """An SSH session to `host` that trusts only the keys pinned in `known_hosts`.

    The route is OpenSSH's: hosts.yml's explicit settings, then ~/.ssh/config's HostName,
    User, Port, IdentityFile and ProxyJump (coophost.sshroute); every hop's key is checked
    against `known_hosts`. `personal_keys` lets paramiko also try ~/.ssh keys and the agent (a
    member's own client); hosts are reached only with the inventory's key. The co-op's
    known_hosts must be readable line by line (exit 2 otherwise); a person's
    `own_known_hosts` may hold lines for other tools, which pin nothing here.
    """
    found = route_of(host)
    target = found.target
    with _through_jumps(host, found, known_hosts, timeout,
                        strict=not own_known_hosts) as (_jumps, sock):
        client = _pinned_client(known_hosts, strict=not own_known_hosts)
        try:
            with _mapped_errors(_shown(host, target, True), known_hosts):
                client.connect(target.hostname, port=target.port, username=target.user,
                               key_filename=_keys(target), timeout=timeout,
                               banner_timeout=timeout, auth_timeout=timeout, sock=sock,
                               allow_agent=personal_keys, look_for_keys=personal_keys)
            yield client
        finally:
            client.close()


def _explicit(host: HostEntry) -> tuple[HostEntry, Route]:
    """`host` as given (no inventory variables), with ~/.ssh/config's HostName and jumps."""
    entry = HostEntry(host.name, host.address, host.port, host.user, host.key_file)
    return entry, route_of(entry)


def pin_name(address: str, port: int) -> str:
    """The known_hosts name `connect` looks `address:port` up under.

    That is the name after ~/.ssh/config's HostName, as `[name]:port` off port 22.
    """
    target = _explicit(HostEntry(address, address, port, "root", None))[1].target
    return target.hostname if target.port == 22 else f"[{target.hostname}]:{target.port}"


def fetch_host_key(address: str, port: int, known_hosts: Path, timeout: float = 10.0
                   ) -> paramiko.PKey:
    """The host key `address:port` offers, from the key exchange alone: nothing is sent after it.

    Nothing is trusted here: the caller compares the key with a fingerprint or a pinned one.
    A host behind jump hosts (ProxyJump in ~/.ssh/config) is reached through them, each
    checked against `known_hosts`.
    """
    import socket

    where = f"{address}:{port}"
    entry, found = _explicit(HostEntry(address, address, port, "root", None))
    target = found.target
    with _through_jumps(entry, found, known_hosts, timeout, strict=True) as (_jumps, sock):
        if sock is None:
            try:
                sock = socket.create_connection((target.hostname, target.port), timeout=timeout)
            except OSError as exc:
                raise HostUnreachable(f"{where}: unreachable: {exc}") from exc
        transport = paramiko.Transport(sock)
        try:
            transport.banner_timeout = timeout
            transport.start_client(timeout=timeout)
            return transport.get_remote_server_key()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise HostUnreachable(f"{where}: no SSH key exchange: {exc}") from exc
        finally:
            transport.close()


@contextmanager
def connect_pinned(host: HostEntry, key: paramiko.PKey, known_hosts: Path,
                   timeout: float = 10.0, *, password: str | None = None,
                   key_file: str | None = None, allow_agent: bool = False
                   ) -> Iterator[paramiko.SSHClient]:
    """An SSH session to `host` that trusts `key` (already checked by the caller) and nothing else.

    For enrolment, before the key is written to known_hosts: a host offering another key is
    refused (exit 4) exactly as `connect` refuses it. `password` is used for authentication only
    and never shown. Jump hosts on the way are checked against `known_hosts`.
    """
    entry, found = _explicit(host)
    target = found.target
    with _through_jumps(entry, found, known_hosts, timeout, strict=True) as (_jumps, sock):
        client = paramiko.SSHClient()
        name = target.hostname if target.port == 22 else f"[{target.hostname}]:{target.port}"
        client.get_host_keys().add(name, key.get_name(), key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            with _mapped_errors(host, Path("(the key being enrolled)")):
                client.connect(target.hostname, port=target.port, username=host.user,
                               key_filename=key_file, password=password, timeout=timeout,
                               banner_timeout=timeout, auth_timeout=timeout, sock=sock,
                               allow_agent=allow_agent, look_for_keys=False)
            yield client
        finally:
            client.close()


def run(client: paramiko.SSHClient, command: str, timeout: float = 30.0) -> tuple[int, str]:
    """Run a fixed command (never built from member input); return (status, stdout)."""
    _stdin, stdout, _stderr = client.exec_command(command, timeout=timeout)
    text = stdout.read().decode(errors="replace")
    return stdout.channel.recv_exit_status(), text


def run_argv(client: paramiko.SSHClient, argv: list[str], timeout: float = 300.0
             ) -> tuple[int, str, str]:
    """Run `argv` (quoted word by word for the remote shell); return (status, out, err)."""
    _stdin, stdout, stderr = client.exec_command(shlex.join(argv), timeout=timeout)
    out = stdout.read().decode(errors="replace")
    err = stderr.read().decode(errors="replace")
    return stdout.channel.recv_exit_status(), out, err


def preflight(host: HostEntry, known_hosts: Path) -> HostReport:
    """Check one host: reachable, pinned key, python3, privilege, disk, memory, OS."""
    report = HostReport(host.name, f"{host.address}:{host.port}")
    try:
        with connect(host, known_hosts) as client:
            report.reachable, report.host_key = True, "ok"
            _status, text = run(client, PREFLIGHT)
            fill_report(report, parse_preflight(text))
    except HostKeyMismatch as exc:
        report.reachable, report.host_key, report.error = True, "mismatch", exc.message
    except HostUnreachable as exc:
        report.error = exc.message
    return report
