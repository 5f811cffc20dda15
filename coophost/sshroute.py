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

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coophost.errors import ConfigError

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
