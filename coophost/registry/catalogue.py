"""The service catalogue: what each service is, as data (one YAML file per service).

A service file names its host group and role, its parameters (type, default, limits), its
resource cost, the secrets it needs, the DNS records it publishes and where a member's data
lives (for backup and export). `load_catalogue` reads and checks them all.
"""

from __future__ import annotations

import hashlib
import math
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from coophost.errors import ConfigError
from coophost.registry import checks
from coophost.registry.yamlio import load_bytes

SERVICES_DIR = Path(__file__).parent.parent / "catalogue" / "services"
PARAM_TYPES = ("int", "bool", "choice", "text", "email", "localparts", "aliases",
               "member_domains", "vhost")
SECRET_KINDS = ("password", "rsa_private_key", "per_mailbox_password")
SECRET_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
DNS_PLACEHOLDERS = frozenset({"domain", "vhost", "host_fqdn", "host_ipv4", "host_ipv6",
                              "dkim_selector", "dkim_public_key", "slug"})
_SERVICE_KEYS = ("name", "description", "group", "role", "status", "version", "needs_domain",
                 "parameters", "cost", "secrets", "dns", "data")
STATUSES = ("available", "coming")  # coming: listed, but no role deploys it yet
_PARAM_KEYS = ("type", "default", "fallback", "min", "max", "max_items", "max_len", "choices",
               "description")


@dataclass(frozen=True)
class Parameter:
    """One setting a member may give a service, with its type, default and limits."""

    name: str
    type: str
    default: Any
    description: str
    min: int | None = None
    max: int | None = None
    max_items: int = 100
    max_len: int = 200
    choices: tuple[str, ...] = ()
    fallback: str | None = None


@dataclass(frozen=True)
class SecretSpec:
    """A secret a service needs per member, generated on first need.

    `per_mailbox_password` is one generated password per mailbox of the unit (its
    `mailboxes` setting); the role gets only their argon2id hashes, under `var`.
    """

    name: str
    kind: str
    length: int = 32
    bits: int = 2048
    var: str = ""

    @property
    def var_name(self) -> str:
        """The name the role gets this secret under (`var`, else `name`)."""
        return self.var or self.name


@dataclass(frozen=True)
class Service:
    """One service of the catalogue."""

    name: str
    description: str
    group: str
    role: str
    version: int
    needs_domain: bool
    parameters: dict[str, Parameter]
    cost: dict[str, str]
    secrets: tuple[SecretSpec, ...]
    dns: tuple[dict[str, str], ...]
    data: dict[str, Any]
    digest: str = field(default="", compare=False)
    status: str = "available"

    @property
    def available(self) -> bool:
        """Whether members may have it now (a role deploys it); else it is coming."""
        return self.status == "available"

    def unit_cost(self, settings: Mapping[str, Any]) -> dict[str, int]:
        """Return the declared RAM (MB) and disk (GB) one unit with `settings` needs."""
        return {resource: max(0, math.ceil(_expression(expr)(**settings)))
                for resource, expr in self.cost.items()}


@dataclass(frozen=True)
class Catalogue:
    """Every service coophost knows, by name, and a digest of their definitions."""

    services: dict[str, Service]
    digest: str

    def get(self, name: str, file: str = "(command line)", field_path: str = "service"
            ) -> Service:
        """Return the service `name` a member may have now, or a validation error.

        An unknown name gets a did-you-mean; a coming service says that it is not offered yet.
        """
        if name not in self.services:
            checks.fail(file, field_path, name, "no such service",
                        hint=checks.suggest(name, self.services))
        self.refuse_coming(name, file, field_path)
        return self.services[name]

    @property
    def available(self) -> list[str]:
        """The names of the services members may have now."""
        return [name for name, service in self.services.items() if service.available]

    def refuse_coming(self, name: str, file: str, field_path: str) -> None:
        """Refuse a service that is listed but not offered yet (no role deploys it)."""
        if not self.services[name].available:
            checks.fail(file, field_path, name, "this service is coming, not offered yet: no "
                        "role deploys it", hint=f"available now: {', '.join(self.available)}")


@cache
def _expression(source: str) -> Callable[..., Any]:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=StrictUndefined)
    compiled = env.compile_expression(source, undefined_to_none=False)

    def evaluate(**values: Any) -> float:
        result: Any = compiled(**values)
        return float(result)

    return evaluate


def _parameter(name: str, raw: object, file: str) -> Parameter:
    where = f"parameters.{name}"
    spec = checks.mapping(raw, file, where)
    checks.refuse_unknown_keys(spec, _PARAM_KEYS, file, where)
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        checks.fail(file, f"{where}.type", kind, f"must be one of {', '.join(PARAM_TYPES)}")
    if "default" not in spec:
        checks.fail(file, where, name, "needs a default")
    return Parameter(
        name=name, type=str(kind), default=spec["default"],
        description=str(spec.get("description", "")),
        min=spec.get("min"), max=spec.get("max"),
        max_items=int(spec.get("max_items", 100)), max_len=int(spec.get("max_len", 200)),
        choices=tuple(spec.get("choices") or ()), fallback=spec.get("fallback"),
    )


def _dns_record(raw: object, file: str, where: str) -> dict[str, str]:
    record = checks.mapping(raw, file, where)
    checks.refuse_unknown_keys(record, ("type", "name", "value"), file, where)
    for key in ("name", "value"):
        for _, placeholder, _, _ in string.Formatter().parse(str(record.get(key, ""))):
            if placeholder is not None and placeholder not in DNS_PLACEHOLDERS:
                checks.fail(file, f"{where}.{key}", placeholder, "unknown placeholder")
    return {key: str(value) for key, value in record.items()}


def parse_service(raw: bytes, file: str) -> Service:
    """Check and build one service definition from the bytes of its file."""
    data = checks.mapping(load_bytes(raw, file), file, "")
    checks.refuse_unknown_keys(data, _SERVICE_KEYS, file, "")
    for key in ("name", "description", "group", "role"):
        if not isinstance(data.get(key), str):
            checks.fail(file, key, data.get(key), "required string")
    if data.get("status") not in STATUSES:
        checks.fail(file, "status", data.get("status"), f"must be one of {', '.join(STATUSES)}")
    params = {name: _parameter(name, spec, file)
              for name, spec in checks.mapping(data.get("parameters"), file,
                                               "parameters").items()}
    cost = checks.mapping(data.get("cost"), file, "cost")
    checks.refuse_unknown_keys(cost, ("ram_mb", "disk_gb"), file, "cost")
    secrets = []
    for index, item in enumerate(checks.sequence(data.get("secrets"), file, "secrets")):
        spec = checks.mapping(item, file, f"secrets[{index}]")
        checks.refuse_unknown_keys(spec, ("name", "kind", "length", "bits", "var"), file,
                                   f"secrets[{index}]")
        if spec.get("kind") not in SECRET_KINDS:
            checks.fail(file, f"secrets[{index}].kind", spec.get("kind"),
                        f"must be one of {', '.join(SECRET_KINDS)}")
        for key in ("name", "var"):
            if (key == "name" or key in spec) and not SECRET_NAME_RE.match(str(spec.get(key))):
                checks.fail(file, f"secrets[{index}].{key}", spec.get(key),
                            "must be a lowercase identifier")
        if spec["kind"] == "per_mailbox_password" and "mailboxes" not in params:
            checks.fail(file, f"secrets[{index}].kind", spec["kind"],
                        "needs a `mailboxes` parameter")
        secrets.append(SecretSpec(name=str(spec["name"]), kind=str(spec["kind"]),
                                  length=int(spec.get("length", 32)),
                                  bits=int(spec.get("bits", 2048)),
                                  var=str(spec.get("var", ""))))
    return Service(
        name=data["name"], description=data["description"], group=data["group"],
        role=data["role"], version=checks.integer(data.get("version", 1), file, "version", 1),
        needs_domain=bool(data.get("needs_domain", False)), parameters=params,
        cost={key: str(cost.get(key, "0")) for key in ("ram_mb", "disk_gb")},
        secrets=tuple(secrets),
        dns=tuple(_dns_record(r, file, f"dns[{i}]")
                  for i, r in enumerate(checks.sequence(data.get("dns"), file, "dns"))),
        data=checks.mapping(data.get("data"), file, "data"),
        digest=hashlib.sha256(raw).hexdigest(), status=str(data["status"]),
    )


@cache
def load_catalogue(directory: Path = SERVICES_DIR) -> Catalogue:
    """Every service file in `directory`, checked; the file name must match the service name."""
    services: dict[str, Service] = {}
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.yml")):
        raw = path.read_bytes()
        service = parse_service(raw, f"catalogue/{path.name}")
        if service.name != path.stem:
            raise ConfigError(f"catalogue/{path.name}: name {service.name!r} must match the "
                              "file name")
        services[service.name] = service
        digest.update(path.name.encode() + b"\0" + raw + b"\0")
    return Catalogue(services=services, digest=digest.hexdigest())
