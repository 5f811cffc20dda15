"""Read the connection facts of an inventory's hosts.yml (a plain Ansible YAML inventory)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from coophost.errors import ConfigError
from coophost.layout import HOSTS_FILE


@dataclass(frozen=True)
class HostEntry:
    """One inventory host and how to reach it over SSH."""

    name: str
    address: str
    port: int
    user: str
    key_file: str | None
    groups: tuple[str, ...] = ()
    vars: dict[str, Any] = field(default_factory=dict)


def _walk(group: str, node: Any, inherited: dict[str, Any], hosts: dict[str, dict[str, Any]],
          groups: dict[str, list[str]], where: str) -> None:
    if node is None:
        return
    if not isinstance(node, dict):
        raise ConfigError(f"{where}: group {group!r} must be a mapping, not {type(node).__name__}")
    merged = {**inherited, **(node.get("vars") or {})}
    for name, hvars in (node.get("hosts") or {}).items():
        entry = hosts.setdefault(str(name), {"group": {}, "host": {}})
        entry["group"].update(merged)
        entry["host"].update(hvars or {})
        groups.setdefault(str(name), []).append(group)
    for child, sub in (node.get("children") or {}).items():
        _walk(str(child), sub, merged, hosts, groups, where)


def load_hosts(inventory: Path) -> list[HostEntry]:
    """Every host of `inventory/hosts.yml` with its merged connection variables."""
    path = inventory / HOSTS_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: no such file", hint="run `coophost lab up` or `coophost init`")
    try:
        data = YAML(typ="safe").load(path.read_text())
    except YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or "all" not in data:
        raise ConfigError(f"{path}: an Ansible YAML inventory starts with `all:`")
    hosts: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[str]] = {}
    _walk("all", data["all"], {}, hosts, groups, str(path))
    result = []
    for name, raw in hosts.items():
        merged = {**raw["group"], **raw["host"]}  # host vars override group vars
        key_file = merged.get("ansible_ssh_private_key_file")
        if isinstance(key_file, str):
            key_file = key_file.replace("{{ inventory_dir }}", str(inventory.resolve()))
        result.append(HostEntry(
            name=name,
            address=str(merged.get("ansible_host", name)),
            port=int(merged.get("ansible_port", 22)),
            user=str(merged.get("ansible_user", "root")),
            key_file=key_file,
            groups=tuple(sorted(set(groups.get(name, [])) - {"all"})),
            vars=merged,
        ))
    return sorted(result, key=lambda h: h.name)
