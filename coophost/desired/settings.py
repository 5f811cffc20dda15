"""What a unit's settings were when applied, and what changed since: the plan's `old -> new`.

A unit's hash says *that* it changed; its fingerprint says *what*: every value its role gets
(the member's record and the service's settings, flattened to `settings.quota_mb`-style keys),
its role's version and its service's definition. State.db keeps the fingerprint each unit was
applied with; the plan compares it with the registry's. Secrets never enter a fingerprint:
the unit's secrets are rendered from the vault, and any setting whose name says it holds one
is recorded and shown masked. A rotated password shows as how many times it was rotated
(`(password) mailbox_passwords/alice: rotated 1 -> 2`), never as a value. Pure.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coophost.registry.catalogue import Service
from coophost.registry.model import Member

ROLE_KEY = "(role files)"
SERVICE_KEY = "(service definition)"
ROTATED_PREFIX = "(password) "  # then the secret's key under the member file's `rotated:`
MASK = "(hidden)"
SENSITIVE = re.compile(r"pass(word|phrase)?|secret|token|private", re.IGNORECASE)
MAX_VALUE = 160  # characters of a value shown; longer ones end with "..."


@dataclass(frozen=True)
class SettingChange:
    """One key of a unit whose value changed; `old`/`new` are None when it was added/removed."""

    key: str
    old: str | None
    new: str | None

    def as_text(self) -> str:
        """`key: old -> new`, `key: new (added)` or `key: old (removed)`."""
        if self.key.startswith(ROTATED_PREFIX):
            return f"{self.key}: password rotated ({self.old or 'never'} -> {self.new})"
        if self.old is None:
            return f"{self.key}: {self.new} (added)"
        if self.new is None:
            return f"{self.key}: {self.old} (removed)"
        return f"{self.key}: {self.old} -> {self.new}"


def fingerprint(member: Member, service: Service, role_version: str) -> dict[str, str]:
    """Every value a unit's role gets, flattened and printable, secrets masked."""
    from coophost.desired.render import unit_vars

    variables = unit_vars(member, service)
    flat: dict[str, str] = {}
    about = dict(variables["member"])
    keys = about.pop("ssh_keys", None)
    _flatten("member", about, flat)
    if keys is not None:  # public, but long: a count and a digest say that they changed
        flat["member.ssh_keys"] = (f"{len(keys)} key(s), sha256 "
                                   + _digest("\n".join(sorted(keys)))[:12])
    _flatten("settings", dict(member.services[service.name]), flat)
    for key, count in member.rotated.get(service.name, {}).items():
        flat[ROTATED_PREFIX + key] = str(count)
    flat[ROLE_KEY] = role_version[:12]
    flat[SERVICE_KEY] = service.digest[:12]
    return flat


def encode(print_: Mapping[str, str]) -> str:
    """A fingerprint as the text stored in state.db."""
    return json.dumps(dict(print_), sort_keys=True, separators=(",", ":"))


def decode(text: str | None) -> dict[str, str] | None:
    """A stored fingerprint; None when none was stored (a unit applied before they were)."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        return None
    return value


def changes(old: Mapping[str, str] | None, new: Mapping[str, str]) -> list[SettingChange]:
    """What differs from `old` to `new`, by key; empty when `old` is unknown (None)."""
    if old is None:
        return []
    return [SettingChange(key, old.get(key), new.get(key))
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def _flatten(prefix: str, value: Any, into: dict[str, str]) -> None:
    """Flatten mappings to dotted keys; lists and scalars become one printable value."""
    if isinstance(value, Mapping) and value:
        for key in sorted(value, key=str):
            _flatten(f"{prefix}.{key}", value[key], into)
        return
    leaf = prefix.rsplit(".", 1)[-1]
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    if SENSITIVE.search(leaf):  # not even a digest: a short secret's digest gives it away
        into[prefix] = MASK
        return
    into[prefix] = text if len(text) <= MAX_VALUE else text[:MAX_VALUE - 3] + "..."


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def explain(changed: list[tuple[str, str, str]], stored: Mapping[tuple[str, str, str], str | None],
            current: Mapping[tuple[str, str], Mapping[str, str]]
            ) -> dict[tuple[str, str, str], list[SettingChange] | None]:
    """For each changed unit (host, member, service): its setting changes, or None if unknown.

    Unknown: no fingerprint was stored when it was applied, or the unit is gone from the
    registry. An empty list: the recorded values are all the same, so what changed is hidden.
    """
    result: dict[tuple[str, str, str], list[SettingChange] | None] = {}
    for key in changed:
        _, member, service = key
        old = decode(stored.get(key))
        new = current.get((member, service))
        result[key] = None if old is None or new is None else changes(old, new)
    return result
