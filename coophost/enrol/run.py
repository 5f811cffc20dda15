"""`coophost host enrol`: pin a new host's key, make its admin account, register it.

Order matters, and each step is checked before the next:
1. the host key is read from the key exchange alone and judged (`plan.pin_verdict`): a key
   other than the pinned one or the --fingerprint is refused (exit 4) with nothing written;
2. the admin account (hosts.yml's `ansible_user`, the controller's key) is tried; if it does not
   work yet, the bootstrap account (root's password, a sysadmin's key) logs in over the same
   key and makes it: account, authorized_keys, sudo NOPASSWD checked by `visudo -cf`;
3. only once the admin account logs in and `sudo -n true` passes are password and root logins
   turned off (the baseline's sshd settings), through the admin account itself;
4. the key is pinned in known_hosts, `host check`'s preflight runs, and the host goes into
   hosts.yml with the capacity read from the machine, minus headroom.
A second enrolment of an enrolled host finds everything in place and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from coophost.enrol import plan
from coophost.errors import ConfigError, ExternalCommandError, HostKeyMismatch, HostUnreachable
from coophost.fsutil import read_regular, replace_if_unchanged
from coophost.layout import HOSTS_FILE, KNOWN_HOSTS_FILE
from coophost.lock import coop_lock
from coophost.registry.hosts import HostEntry
from coophost.ssh import HostReport, connect_pinned, fetch_host_key, known_hosts_entries, preflight
from coophost.ssh import pin_name as ssh_pin_name

KNOWN_HOSTS_LIMIT = 4 * 1024 * 1024


@dataclass(frozen=True)
class Request:
    """What the sysadmin asked for (the bootstrap password is passed apart, never kept here)."""

    name: str
    address: str
    port: int = 22
    user: str = "root"  # the bootstrap account
    fingerprint: str | None = None
    groups: tuple[str, ...] = ()
    fqdn: str | None = None
    identity: Path | None = None  # the bootstrap account's key (else the agent, or a password)


@dataclass
class Result:
    """What an enrolment did."""

    name: str
    key_type: str
    fingerprint: str
    verdict: str
    account: str = ""  # "created" or "already working"
    sshd: str = ""  # "hardened", "already hardened", or the settings still not in force
    pinned: bool = False  # known_hosts written
    registered: bool = False  # hosts.yml written
    capacity: dict[str, int] = field(default_factory=dict)
    report: HostReport | None = None

    @property
    def changed(self) -> bool:
        """Whether anything on the host or in the co-op was changed."""
        return self.pinned or self.registered or self.account == "created" \
            or self.sshd == "hardened"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"host": self.name, "key_type": self.key_type, "fingerprint": self.fingerprint,
                "verdict": self.verdict, "account": self.account, "sshd": self.sshd,
                "pinned": self.pinned, "registered": self.registered,
                "capacity": self.capacity, "changed": self.changed,
                "preflight": self.report.as_dict() if self.report else None}


def controller(inventory: Path) -> tuple[str, Path]:
    """The admin account and the controller's private key hosts.yml names (all.vars)."""
    from coophost.registry.yamlio import load_bytes

    try:
        data = load_bytes(read_regular(inventory / HOSTS_FILE, HOSTS_FILE, 4 * 1024 * 1024),
                          HOSTS_FILE)
    except FileNotFoundError:
        raise ConfigError(f"{inventory / HOSTS_FILE}: missing",
                          hint="create the co-op with `coophost init`") from None
    everything = data.get("all") if isinstance(data, dict) else None
    variables = (everything or {}).get("vars") or {}
    user = str(variables.get("ansible_user", "root"))
    plan.check_user(user, f"{HOSTS_FILE}: all.vars.ansible_user")
    if user == "root":
        raise ConfigError(f"{HOSTS_FILE}: all.vars.ansible_user: 'root': enrolment makes an "
                          "admin account for coophost and turns root logins off",
                          hint="set it to `coophost`, as `coophost init` does")
    key = variables.get("ansible_ssh_private_key_file")
    if not isinstance(key, str) or not key:
        raise ConfigError(f"{HOSTS_FILE}: all.vars.ansible_ssh_private_key_file: unset: coophost "
                          "needs the controller's key to install on the host",
                          hint="`coophost init` makes one (controller-key); name it there")
    path = Path(key.replace("{{ inventory_dir }}", str(inventory.resolve())))
    return user, path


def _controller_key(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise ConfigError(f"{path}: the controller's key cannot be read: {exc}") from exc


def _admin_works(admin: HostEntry, key: paramiko.PKey, known_hosts: Path) -> bool:
    """Whether the admin account logs in with the controller's key and may `sudo -n`."""
    try:
        with connect_pinned(admin, key, known_hosts, key_file=admin.key_file) as client:
            status, _out, _err = _run(client, ["sudo", "-n", "true"])
            return status == 0
    except HostKeyMismatch:
        raise
    except HostUnreachable:
        return False


def _run(client: paramiko.SSHClient, argv: list[str], stdin: str | None = None,
         timeout: float = 120.0) -> tuple[int, str, str]:
    """Run `argv` (quoted word by word); `stdin` (a sudo password) is written, never shown."""
    import shlex

    channel_in, out, err = client.exec_command(shlex.join(argv), timeout=timeout)
    if stdin is not None:
        channel_in.write(stdin)
        channel_in.flush()
    channel_in.channel.shutdown_write()
    text, errors = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return out.channel.recv_exit_status(), text, errors


def _bootstrap(request: Request, key: paramiko.PKey, known_hosts: Path, admin_user: str,
               public_line: str, password: str | None,
               ask_password: Callable[[], str | None]) -> None:
    """Log in with the bootstrap account over the checked key and make the admin account."""
    entry = HostEntry(request.name, request.address, request.port, request.user, None)
    identity = str(request.identity) if request.identity else None

    def setup(secret: str | None, sudo_secret: str | None) -> tuple[int, str]:
        with connect_pinned(entry, key, known_hosts, password=secret, key_file=identity,
                            allow_agent=identity is None and secret is None) as client:
            sudo_password = sudo_secret if request.user != "root" else None
            argv = plan.as_root(
                ["/bin/sh", "-c", plan.SETUP_SCRIPT, "sh", admin_user, public_line],
                request.user, with_password=sudo_password is not None)
            status, _out, err = _run(
                client, argv, stdin=None if sudo_password is None else sudo_password + "\n")
        return status, err

    try:
        status, err = setup(password, password)
    except HostKeyMismatch:
        raise
    except HostUnreachable as exc:
        refused = "not accepted" in exc.message or "No authentication methods" in exc.message
        if password is not None or not refused:
            raise
        password = ask_password()
        if password is None:
            raise HostUnreachable(f"{exc.message}; give the bootstrap account's password in "
                                  f"{plan.PASSWORD_ENV} or at the prompt") from exc
        status, err = setup(password, password)
    if status != 0 and password is None and "password is required" in err:
        password = ask_password()  # the key logged in; sudo wants the account's password
        if password is not None:
            status, err = setup(None, password)
    if status != 0:
        raise ExternalCommandError(
            f"{request.name}: making the {admin_user} account as {request.user} failed "
            f"(exit {status}): {err.strip()[-500:]}",
            hint=f"nothing was turned off: the bootstrap login still works"
                 f"{'' if request.user == 'root' else f'; sudo may need {plan.PASSWORD_ENV}'}")


def _harden(admin: HostEntry, key: paramiko.PKey, known_hosts: Path) -> str:
    """Turn password and root logins off through the admin account, if not off already."""
    with connect_pinned(admin, key, known_hosts, key_file=admin.key_file) as client:
        _status, effective, _err = _run(client, ["sudo", "-n", "/usr/sbin/sshd", "-T"])
        if not plan.sshd_problems(effective):
            return "already hardened"
        status, _out, err = _run(client, ["sudo", "-n", "/bin/sh", "-c", plan.HARDEN_SCRIPT, "sh",
                                          plan.SSHD_TEXT])
        if status != 0:
            raise ExternalCommandError(f"{admin.name}: turning password and root logins off "
                                       f"failed (exit {status}): {err.strip()[-500:]}")
        _status, effective, _err = _run(client, ["sudo", "-n", "/usr/sbin/sshd", "-T"])
        problems = plan.sshd_problems(effective)
        return "hardened" if not problems else "still: " + "; ".join(problems)


def _capacity(admin: HostEntry, key: paramiko.PKey, known_hosts: Path) -> dict[str, int]:
    with connect_pinned(admin, key, known_hosts, key_file=admin.key_file) as client:
        _s, meminfo, _e = _run(client, ["cat", "/proc/meminfo"])
        _s, df, _e = _run(client, ["df", "-Pk", "/"])
    return plan.declared_capacity(plan.parse_mem_total_mb(meminfo), plan.parse_df_free_gb(df))


def _pin(known_hosts: Path, name: str, key: paramiko.PKey) -> None:
    try:
        raw: bytes | None = read_regular(known_hosts, KNOWN_HOSTS_FILE, KNOWN_HOSTS_LIMIT)
    except FileNotFoundError:
        raw = None
    text = plan.add_known_host((raw or b"").decode(), name, key.get_name(), key.asbytes())
    replace_if_unchanged(known_hosts, text, raw, KNOWN_HOSTS_FILE, limit=KNOWN_HOSTS_LIMIT,
                         hint="nothing was pinned; run `coophost host enrol` again")


def enrol(inventory: Path, request: Request, *, password: str | None,
          confirm: Callable[[str, str], bool], ask_password: Callable[[], str | None],
          say: Callable[[str], None]) -> Result:
    """Enrol `request`'s host into the co-op at `inventory` (see the module's docstring).

    `confirm(key_type, fingerprint)` is asked only for a new key without --fingerprint;
    `ask_password()` only when the bootstrap account's key or agent is refused and no password
    was given (None: none can be asked for).
    """
    from coophost.errors import UsageError
    from coophost.registry.catalogue import load_catalogue
    from coophost.registry.edit import add_host, check_new_host
    from coophost.registry.loader import load_registry

    plan.check_user(request.user, "--user")
    if request.fingerprint is not None:
        plan.check_fingerprint(request.fingerprint)
    check_new_host(load_catalogue(), request.name, request.groups)
    known_hosts = inventory / KNOWN_HOSTS_FILE
    with coop_lock(inventory, purpose=f"host enrol {request.name}"):
        loaded = load_registry(inventory, need_hosts=False)
        existing = loaded.registry.hosts.get(request.name)
        if existing is not None and existing.connection is not None and (
                existing.connection.address, existing.connection.port) != (
                request.address, request.port):
            raise UsageError(f"host {request.name!r} is already in {HOSTS_FILE} at "
                             f"{existing.connection.address}:{existing.connection.port}, not "
                             f"{request.address}:{request.port}")
        admin_user, key_path = controller(inventory)
        controller_key = _controller_key(key_path)
        public_line = (f"{controller_key.get_name()} {controller_key.get_base64()} "
                       f"coophost-controller")
        pinned = [plan.PinnedKey(tuple(entry.hostnames), entry.key.get_name(),
                                 entry.key.get_base64())
                  for entry in known_hosts_entries(known_hosts, strict=True)]
        offered = fetch_host_key(request.address, request.port, known_hosts)
        found = plan.fingerprint(offered.asbytes())
        pin_name = ssh_pin_name(request.address, request.port)
        verdict = plan.pin_verdict(offered.get_name(), offered.asbytes(),
                                   (pin_name, request.name), pinned, request.fingerprint)
        where = f"{request.name} ({request.address}:{request.port})"
        if verdict is plan.Verdict.DIFFERS_FROM_PINNED:
            raise HostKeyMismatch(f"{where}: it offers {offered.get_name()} {found}, "
                                  f"{KNOWN_HOSTS_FILE} pins another key for it: nothing written",
                                  hint=f"if the host was really rebuilt, remove its old line "
                                       f"from {known_hosts} first")
        if verdict is plan.Verdict.DIFFERS_FROM_GIVEN:
            raise HostKeyMismatch(f"{where}: it offers {offered.get_name()} {found}, not "
                                  f"{request.fingerprint}: nothing written",
                                  hint="check the fingerprint on the host's console; another "
                                       "machine may be answering at this address")
        if verdict is plan.Verdict.ASK and not confirm(offered.get_name(), found):
            raise UsageError(f"{where}: key {found} not confirmed: nothing written")
        result = Result(request.name, offered.get_name(), found, verdict.value)
        say(f"{request.name}: host key {offered.get_name()} {found} ({verdict.value})")
        admin = HostEntry(request.name, request.address, request.port, admin_user,
                          str(key_path))
        if _admin_works(admin, offered, known_hosts):
            result.account = "already working"
        else:
            say(f"{request.name}: making the {admin_user} account as {request.user}")
            _bootstrap(request, offered, known_hosts, admin_user, public_line, password,
                       ask_password)
            if not _admin_works(admin, offered, known_hosts):
                raise ExternalCommandError(
                    f"{where}: the {admin_user} account was made but does not log in with "
                    f"the controller's key and `sudo -n true`",
                    hint="nothing was turned off: the bootstrap login still works")
            result.account = "created"
        result.sshd = _harden(admin, offered, known_hosts)
        if verdict is not plan.Verdict.ALREADY_PINNED:
            _pin(known_hosts, pin_name, offered)
            result.pinned = True
        result.report = preflight(admin, known_hosts)
        if not result.report.ok:
            return result
        if existing is None:
            result.capacity = _capacity(admin, offered, known_hosts)
            add_host(inventory, loaded, request.name, address=request.address,
                     port=request.port, fqdn=request.fqdn, ram_mb=result.capacity["ram_mb"],
                     disk_gb=result.capacity["disk_gb"], groups=request.groups)
            result.registered = True
        else:
            result.capacity = dict(existing.capacity)
            if (request.groups and set(request.groups) != set(existing.groups)) or (
                    request.fqdn and request.fqdn != existing.fqdn):
                say(f"{request.name}: {HOSTS_FILE} keeps its groups "
                    f"({', '.join(existing.groups) or 'none'}) and fqdn ({existing.fqdn}): "
                    f"edit {HOSTS_FILE} to change them")
    return result
