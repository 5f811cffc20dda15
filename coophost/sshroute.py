"""How to reach a host over SSH as OpenSSH would: hosts.yml first, then ~/.ssh/config.

Ansible's ssh connection runs OpenSSH, which reads the sysadmin's ~/.ssh/config: a `Host`
block may rename the address (`HostName`), set `User`, `Port`, `IdentityFile` and a
`ProxyJump` chain. coophost's own SSH (paramiko: host check, export, backups, health) resolves
the same entries here, so both reach a host the same way. What hosts.yml sets explicitly
(`ansible_user`, `ansible_port`, `ansible_ssh_private_key_file`) wins, as Ansible's command-line
options win over the config file. Host keys are never taken from the config: every hop is
checked against the co-op's pinned known_hosts. Pure, apart from reading the config file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from coophost.errors import ConfigError
from coophost.registry.model import HostEntry

SSH_CONFIG_ENV = "COOPHOST_SSH_CONFIG"  # another config file; empty: none
MAX_JUMPS = 4
JUMP_RE = re.compile(r"^(?:(?P<user>[A-Za-z0-9_.-]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)"
                     r"(?::(?P<port>[0-9]{1,5}))?$")


@dataclass(frozen=True)
class Hop:
    """One SSH connection of a route: where, as whom, with which keys."""

    hostname: str
    port: int
    user: str
    key_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    """The jump hosts, in order, then the host itself."""

    target: Hop
    jumps: tuple[Hop, ...] = field(default_factory=tuple)

    @property
    def hops(self) -> tuple[Hop, ...]:
        """Every connection, first jump first, the target last."""
        return (*self.jumps, self.target)


def config_path() -> Path | None:
    """The OpenSSH client config to read: $COOPHOST_SSH_CONFIG, else ~/.ssh/config if any."""
    given = os.environ.get(SSH_CONFIG_ENV)
    if given is not None:
        return Path(given) if given else None
    default = Path.home() / ".ssh" / "config"
    return default if default.is_file() else None


def load_config(path: Path | None) -> Any:
    """The parsed config (a paramiko SSHConfig), or None without a file."""
    if path is None:
        return None
    from paramiko.config import SSHConfig

    try:
        return SSHConfig.from_path(str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from exc
    except Exception as exc:  # paramiko raises its own ConfigParseError
        raise ConfigError(f"{path}: not an OpenSSH client config: {exc}") from exc


def _key_files(found: dict[str, Any]) -> tuple[str, ...]:
    return tuple(os.path.expanduser(str(k)) for k in found.get("identityfile", []))


def _port(value: object, where: str) -> int:
    try:
        port = int(str(value))
    except ValueError:
        raise ConfigError(f"{where}: port {value!r} is not a number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{where}: port {port} is out of range")
    return port


def route(address: str, port: int | None, user: str | None, key_file: str | None,
          config: Any, *, default_user: str = "root") -> Route:
    """The route to `address`: explicit values first, then the config's, then defaults.

    `port`, `user` and `key_file` are None when hosts.yml does not set them.
    """
    found: dict[str, Any] = dict(config.lookup(address)) if config is not None else {}
    target = Hop(hostname=str(found.get("hostname", address)),
                 port=port if port is not None else _port(found.get("port", 22),
                                                          f"ssh config for {address}"),
                 user=user or str(found.get("user", default_user)),
                 key_files=(key_file,) if key_file else _key_files(found))
    jumps: list[Hop] = []
    spec = str(found.get("proxyjump", "none"))
    if spec.lower() != "none":
        for part in spec.split(","):
            jumps.append(_jump(part.strip(), config, address))
        if len(jumps) > MAX_JUMPS:
            raise ConfigError(f"ssh config for {address}: ProxyJump has {len(jumps)} hops, at "
                              f"most {MAX_JUMPS}")
    return Route(target, tuple(jumps))


def _jump(text: str, config: Any, address: str) -> Hop:
    """One ProxyJump element, `[user@]host[:port]`, completed from the config's own entry."""
    parsed = JUMP_RE.match(text)
    if not parsed:
        raise ConfigError(f"ssh config for {address}: ProxyJump {text!r} is not "
                          "[user@]host[:port]")
    host = parsed["host"].strip("[]")
    found: dict[str, Any] = dict(config.lookup(host)) if config is not None else {}
    if str(found.get("proxyjump", "none")).lower() != "none":
        raise ConfigError(f"ssh config for {host}: a jump host with its own ProxyJump is not "
                          "supported: list every hop in one ProxyJump")
    return Hop(hostname=str(found.get("hostname", host)),
               port=_port(parsed["port"] or found.get("port", 22), f"ProxyJump {text!r}"),
               user=parsed["user"] or str(found.get("user", "root")),
               key_files=_key_files(found))


def host_route(host: HostEntry, config: Any) -> Route:
    """The route to an inventory host: what hosts.yml sets explicitly, then `config`'s.

    An entry made by hand (`--remote`, no inventory variables) is all explicit. A jump host
    with no IdentityFile of its own is reached with the host's key, as OpenSSH offers every
    identity it has to each hop.
    """
    from_inventory = bool(host.vars)
    found = route(host.address,
                  host.port if not from_inventory or "ansible_port" in host.vars else None,
                  host.user if not from_inventory or "ansible_user" in host.vars else None,
                  host.key_file, config, default_user=host.user)
    if not found.jumps or not found.target.key_files:
        return found
    jumps = tuple(hop if hop.key_files else replace(hop, key_files=found.target.key_files)
                  for hop in found.jumps)
    return replace(found, jumps=jumps)


# ---- the same routes for Ansible's OpenSSH ---------------------------------------------------
#
# OpenSSH's own ProxyJump starts the jump's ssh with none of the command line's options, so
# that hop would be checked against ~/.ssh/known_hosts (or not at all), not the co-op's file.
# For hosts with jumps, coophost gives Ansible's ssh a config file (-F) of its own: one block
# per jump host, pinned to the co-op's known_hosts, chained by explicit ProxyCommands, then the
# sysadmin's config included for everything else. ssh keeps the first value it reads for an
# option, and a ProxyCommand read first wins over a later ProxyJump.

JUMP_ALIAS = "coophost-jump-"
_UNQUOTABLE = re.compile(r'["\n\r]')


def _quoted(value: str, what: str) -> str:
    """`value` as one ssh_config argument (double-quoted); refuses what cannot be quoted."""
    if _UNQUOTABLE.search(value):
        raise ConfigError(f"ssh config: {what} {value!r} holds a quote or a line break")
    return f'"{value}"'


def _alias(chain: tuple[Hop, ...]) -> str:
    """A stable name for the last hop of `chain` reached through the ones before it."""
    text = "\n".join(f"{h.user}@{h.hostname}:{h.port}" for h in chain)
    return JUMP_ALIAS + hashlib.sha256(text.encode()).hexdigest()[:12]


def _host_pattern(address: str) -> str:
    """`address` as a Host pattern that matches only itself."""
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", address):
        raise ConfigError(f"ssh config: host address {address!r} cannot be matched safely")
    return address


def openssh_config(routes: Mapping[str, Route], known_hosts: Path, own_path: Path,
                   includes: tuple[Path, ...] = ()) -> str:
    """The ssh_config text giving Ansible's ssh the jumps of `routes` ({address: route}).

    Only routes with jumps appear; `own_path` is where this text is written (the jump
    commands read it again); `includes` are read after it (the sysadmin's config).
    """
    own = shlex.quote(str(own_path))
    known = _quoted(str(known_hosts), "known_hosts")
    blocks: dict[str, list[str]] = {}
    targets: list[str] = []
    for address in sorted(routes):
        found = routes[address]
        if not found.jumps:
            continue
        previous = ""
        for index, hop in enumerate(found.jumps):
            alias = _alias(found.jumps[:index + 1])
            if alias not in blocks:
                lines = [f"Host {alias}", f"    HostName {_host_pattern(hop.hostname)}",
                         f"    Port {hop.port}", f"    User {_quoted(hop.user, 'user')}"]
                lines += [f"    IdentityFile {_quoted(k, 'IdentityFile')}" for k in hop.key_files]
                if hop.key_files:
                    lines.append("    IdentitiesOnly yes")
                lines += ["    StrictHostKeyChecking yes", f"    UserKnownHostsFile {known}",
                          "    GlobalKnownHostsFile /dev/null", "    UpdateHostKeys no",
                          "    BatchMode yes"]
                lines.append(f"    ProxyCommand ssh -F {own} -W [%h]:%p {previous}" if previous
                             else "    ProxyCommand none")
                blocks[alias] = lines
            previous = alias
        targets += [f"Host {_host_pattern(address)}",
                    f"    ProxyCommand ssh -F {own} -W [%h]:%p {previous}"]
    head = ["# Written by coophost on each run for Ansible's ssh: every jump host is checked",
            "# against the co-op's known_hosts. Do not edit: it is replaced."]
    body = [line for lines in blocks.values() for line in lines] + targets
    tail = ["Match all", *[f"Include {_quoted(str(p), 'Include')}" for p in includes]]
    return "\n".join(head + body + (tail if includes else [])) + "\n"

