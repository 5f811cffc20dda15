"""Service hooks: what a service's data (its coophost.yml) cannot say, behind one Protocol.

A service is one folder, `services/<name>/`. Most of what coophost knows of it is data; the
rest is an optional `services/<name>/hooks.py` defining `HOOKS`, an object meeting
`ServiceHooks` (usually a `DefaultHooks` subclass overriding what it needs). The catalogue
loads that file by path (as module `coophost_service_<name>`) and keeps the object on the
Service record; `hooks_for(service)` returns it, or the defaults for a service without one.

The core never names a service: it asks the hooks.
- `claims`: co-op-wide names a unit claims beyond domains and vhosts (mail: addresses), so
  no two members hold the same one.
- `check_settings`: cross-field checks of resolved settings (mail: an alias is no mailbox).
- `dns_placeholders` / `dns_values`: extra values for the service's DNS templates (mail:
  the DKIM selector and public key, from the unit's stored key).
- `probe`: an end-to-end check of the service in the lab (mail: a message between members).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from coophost.registry.catalogue import Catalogue, Service
from coophost.registry.model import Member

Claim = tuple[str, str, str]  # (key, field, value): what is claimed, where, as written
SecretLookup = Callable[[str], "str | None"]  # a unit's stored secret by name, None if absent


@dataclass
class DnsValues:
    """Values for a unit's DNS placeholders, and notes on records that cannot be made yet."""

    values: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ProbeCheck:
    """One step of an end-to-end probe."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class ProbeResult:
    """What an end-to-end probe found: a summary line and its checks."""

    summary: str
    checks: tuple[ProbeCheck, ...]

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return all(check.ok for check in self.checks)


@runtime_checkable
class ServiceHooks(Protocol):
    """What a service's hooks.py provides (`HOOKS`); `DefaultHooks` does nothing."""

    dns_placeholders: frozenset[str]
    # How many of a lab's service hosts (the first ones) `coophost lab up` puts in the
    # service's group; None: every one. A heavy service keeps the other lab hosts lean.
    lab_hosts: int | None

    def claims(self, member: Member, settings: Mapping[str, Any]) -> list[Claim]:
        """Co-op-wide names the unit claims beyond domains and vhosts: (key, field, value)."""
        ...

    def check_settings(self, resolved: Mapping[str, Any], file: str, where: str) -> None:
        """Refuse settings whose fields contradict each other (checks.fail)."""
        ...

    def dns_values(self, member: Member, settings: Mapping[str, Any],
                   secret: SecretLookup) -> DnsValues:
        """Values of `dns_placeholders` for one unit (an empty list leaves its records out)."""
        ...


    def probe(self, lab: Any, timeout: float) -> ProbeResult | None:
        """An end-to-end check of the service in lab `lab`; None when it has none."""
        ...

    def verify_restored(self, root: Path) -> str:
        """Check data restored under `root` beyond its manifest ("" when sound, else why)."""
        ...


class DefaultHooks:
    """The hooks of a service without hooks.py: no claims, checks, values or probe."""

    dns_placeholders: frozenset[str] = frozenset()
    lab_hosts: int | None = None

    def claims(self, member: Member, settings: Mapping[str, Any]) -> list[Claim]:
        """No names beyond domains and vhosts."""
        return []

    def check_settings(self, resolved: Mapping[str, Any], file: str, where: str) -> None:
        """Each parameter's own type and limits suffice."""

    def dns_values(self, member: Member, settings: Mapping[str, Any],
                   secret: SecretLookup) -> DnsValues:
        """No extra DNS placeholders."""
        return DnsValues()


    def probe(self, lab: Any, timeout: float) -> ProbeResult | None:
        """No end-to-end probe."""
        return None

    def verify_restored(self, root: Path) -> str:
        """Every file matching its manifest is all a restore can show."""
        return ""


DEFAULT_HOOKS: ServiceHooks = DefaultHooks()


def hooks_for(service: Service) -> ServiceHooks:
    """The hooks of `service`: its hooks.py's `HOOKS`, else the defaults."""
    hooks = service.hooks
    return DEFAULT_HOOKS if hooks is None else hooks  # type: ignore[no-any-return]


def probes(catalogue: Catalogue) -> dict[str, ServiceHooks]:
    """The hooks of every available service, by name (callers ask each for its probe)."""
    return {name: hooks_for(service) for name, service in catalogue.services.items()
            if service.available}
