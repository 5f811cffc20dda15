"""The service catalogue: what each service is, as data (one folder per service).

Each member service is one folder, `services/<name>/`, which is also its Ansible role. Its
`coophost.yml` names its host group and role, its parameters (type, default, limits), its
resource cost, the secrets it needs, the DNS records it publishes, the ports it listens on,
what it does for a suspended member, and where a member's data lives (for backup and export).
`load_catalogue` reads and checks them all.

What data cannot say lives in the folder's optional `hooks.py` (see coophost.services for the
protocol). The registry never imports coophost.services: it loads a service's hook module
from the service's own folder and calls it through the Service record (`Service.hooks`, None
for a service without one), so the import direction stays registry < services.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import re
import string
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from coophost import layout
from coophost.errors import ConfigError
from coophost.registry import checks
from coophost.registry.yamlio import load_bytes

PARAM_TYPES = ("int", "bool", "choice", "text", "email", "localparts", "aliases",
               "member_domains", "vhost")
SECRET_KINDS = ("password", "rsa_private_key", "per_mailbox_password", "ssh_ed25519_key")
# How a `password` secret may be hashed for its role (the role then gets only the hash).
SECRET_HASHES = ("bcrypt",)
SECRET_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# What every service's DNS templates may name; a service's hooks may add more (`dns_values`).
DNS_PLACEHOLDERS = frozenset({"domain", "vhost", "host_fqdn", "host_ipv4", "host_ipv6", "slug"})
# What data paths may name: a domain of the unit, the member's slug, its life (owner).
DATA_PLACEHOLDERS = frozenset({"domain", "slug", "owner"})
_SERVICE_KEYS = ("name", "description", "group", "role", "status", "version", "needs_domain",
                 "member_ssh_keys",
                 "parameters", "cost", "secrets", "dns", "dns_placeholders", "data", "ports",
                 "systemd", "suspension")
# A systemd unit a service declares: a plain name with its type suffix, never a path or glob.
SYSTEMD_UNIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,80}\.(service|socket|timer|path)$")
_DATA_KEYS = ("paths", "archive", "dumps", "export")
# What an export command may name: the member's slug and its life (owner), both plain names.
EXPORT_PLACEHOLDERS = frozenset({"slug", "owner"})
_DUMP_KEYS = ("kind", "engine", "name")
# Database engines whose dumps roles/backup makes, loads and compares (coophost-backup).
DUMP_ENGINES = frozenset({"postgresql"})
PORT_PROTOCOLS = ("tcp", "udp")
# What a service's role does for a suspended member (machine-readable `does:` entries).
SUSPENSION_EFFECTS = ("logins_refused", "incoming_accepted_or_bounced", "site_unavailable",
                      "read_only")
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
    A `password` with `hash: bcrypt` reaches its role only as that hash (nginx's auth_basic
    reads bcrypt), under `var`.
    """

    name: str
    kind: str
    length: int = 32
    bits: int = 2048
    var: str = ""
    hash: str = ""

    @property
    def var_name(self) -> str:
        """The name the role gets this secret under (`var`, else `name`)."""
        return self.var or self.name


@dataclass(frozen=True)
class Port:
    """One port a service listens on."""

    port: int
    protocol: str
    description: str


@dataclass(frozen=True)
class Suspension:
    """What a service's role does for a suspended member: one sentence, and effect names."""

    summary: str
    effects: tuple[str, ...]


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
    ports: tuple[Port, ...] = ()
    # The systemd units that must be active on a host of its group (`coophost status`).
    systemd: tuple[str, ...] = ()
    suspension: Suspension | None = None
    folder: Path | None = field(default=None, compare=False)  # services/<name>/
    # Placeholders its DNS templates may name beyond DNS_PLACEHOLDERS; its hooks fill them.
    dns_extra: frozenset[str] = frozenset()
    # Whether the role gets the member's registered SSH keys (`member.ssh_keys`).
    member_ssh_keys: bool = False

    @property
    def hooks(self) -> Any:
        """The service's hook object (a coophost.services.ServiceHooks), None without hooks.py.

        Loaded on first use, so a command that never asks a hook (a warm `plan`) does not
        import it.
        """
        return None if self.folder is None else load_hooks(self.folder, self.name)

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
            if file == "(command line)":  # the one wording of a service looked up by name
                raise checks.no_service(name, self.services)
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


def placeholders(text: str, file: str, where: str) -> list[str]:
    """The `{name}` placeholders of a template (refusing a malformed one)."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        checks.fail(file, where, text, f"not a valid template: {exc}")
        return []


def _known(text: str, known: Iterable[str], file: str, where: str) -> None:
    allowed = set(known)
    for name in placeholders(text, file, where):
        if name not in allowed:
            checks.fail(file, where, name, "unknown placeholder",
                        hint=f"known: {', '.join(sorted(allowed))}")


def _dns_record(raw: object, file: str, where: str, known: Iterable[str]) -> dict[str, str]:
    record = checks.mapping(raw, file, where)
    checks.refuse_unknown_keys(record, ("type", "name", "value"), file, where)
    for key in ("type", "name", "value"):
        if not isinstance(record.get(key), str):
            checks.fail(file, f"{where}.{key}", record.get(key), "required string")
    for key in ("name", "value"):
        _known(str(record[key]), known, file, f"{where}.{key}")
    return {key: str(value) for key, value in record.items()}


def _data(raw: object, params: Mapping[str, Parameter], file: str) -> dict[str, Any]:
    """Where a unit's data lives: path templates, the host's archive folder, database dumps."""
    data = checks.mapping(raw, file, "data")
    checks.refuse_unknown_keys(data, _DATA_KEYS, file, "data")
    for index, path in enumerate(checks.sequence(data.get("paths"), file, "data.paths")):
        if not isinstance(path, str) or not path.startswith("/"):
            checks.fail(file, f"data.paths[{index}]", path, "must be an absolute path")
        _known(str(path), DATA_PLACEHOLDERS, file, f"data.paths[{index}]")
    if "archive" in data:
        archive = data["archive"]
        if not isinstance(archive, str) or not archive.startswith("/"):
            checks.fail(file, "data.archive", archive, "must be an absolute path")
        _known(str(archive), (), file, "data.archive")
    for index, item in enumerate(checks.sequence(data.get("dumps"), file, "data.dumps")):
        where = f"data.dumps[{index}]"
        dump = checks.mapping(item, file, where)
        checks.refuse_unknown_keys(dump, _DUMP_KEYS, file, where)
        for key in _DUMP_KEYS:
            if not isinstance(dump.get(key), str):
                checks.fail(file, f"{where}.{key}", dump.get(key), "required string")
            _known(str(dump[key]), {*DATA_PLACEHOLDERS, *params}, file, f"{where}.{key}")
        if dump["kind"] != "database":
            checks.fail(file, f"{where}.kind", dump["kind"], "must be database")
        _dump_engine(str(dump["engine"]), params, file, f"{where}.engine")
    if "export" in data:
        # A command on the unit's host (run with sudo) writing a tar stream of takeout
        # material made from the data (git: one bundle per repository); argv, no shell.
        argv = checks.sequence(data["export"], file, "data.export", 20)
        if not argv or not isinstance(argv[0], str) or not argv[0].startswith("/"):
            checks.fail(file, "data.export", data["export"],
                        "must be a command (a list) starting with an absolute path")
        for index, word in enumerate(argv):
            if not isinstance(word, str):
                checks.fail(file, f"data.export[{index}]", word, "must be a string")
            _known(str(word), EXPORT_PLACEHOLDERS, file, f"data.export[{index}]")
    return data


def _dump_engine(engine: str, params: Mapping[str, Parameter], file: str, where: str) -> None:
    """A dump's engine: one backups can dump, or a choice setting offering only such engines."""
    if engine.startswith("{") and engine.endswith("}") and engine[1:-1] in params:
        offered = set(params[engine[1:-1]].choices)
        if not offered or not offered <= DUMP_ENGINES:
            checks.fail(file, where, engine,
                        f"the setting must be a choice among engines backups can dump "
                        f"({', '.join(sorted(DUMP_ENGINES))}); it offers "
                        f"{', '.join(sorted(offered)) or 'any value'}")
    elif engine not in DUMP_ENGINES:
        checks.fail(file, where, engine,
                    f"backups can dump only {', '.join(sorted(DUMP_ENGINES))}")


def _systemd(raw: object, file: str) -> tuple[str, ...]:
    names = []
    for index, item in enumerate(checks.sequence(raw, file, "systemd", 20)):
        if not isinstance(item, str) or not SYSTEMD_UNIT_RE.match(item):
            checks.fail(file, f"systemd[{index}]", item,
                        "must be a systemd unit name (letters, digits, -_.@, with its suffix)")
        names.append(item)
    return tuple(names)


def _ports(raw: object, file: str) -> tuple[Port, ...]:
    ports = []
    for index, item in enumerate(checks.sequence(raw, file, "ports")):
        where = f"ports[{index}]"
        spec = checks.mapping(item, file, where)
        checks.refuse_unknown_keys(spec, ("port", "protocol", "description"), file, where)
        protocol = spec.get("protocol", "tcp")
        if protocol not in PORT_PROTOCOLS:
            checks.fail(file, f"{where}.protocol", protocol,
                        f"must be one of {', '.join(PORT_PROTOCOLS)}")
        ports.append(Port(port=checks.integer(spec.get("port"), file, f"{where}.port", 1, 65535),
                          protocol=str(protocol),
                          description=str(spec.get("description", ""))))
    return tuple(ports)


def _suspension(raw: object, file: str, required: bool) -> Suspension | None:
    if raw is None and not required:
        return None
    spec = checks.mapping(raw, file, "suspension")
    checks.refuse_unknown_keys(spec, ("summary", "does"), file, "suspension")
    summary = spec.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        checks.fail(file, "suspension.summary", summary, "one sentence: what the role does "
                    "for a suspended member")
    effects = []
    for index, effect in enumerate(checks.sequence(spec.get("does"), file, "suspension.does")):
        if effect not in SUSPENSION_EFFECTS:
            checks.fail(file, f"suspension.does[{index}]", effect,
                        f"must be one of {', '.join(SUSPENSION_EFFECTS)}")
        effects.append(str(effect))
    if "logins_refused" not in effects:
        checks.fail(file, "suspension.does", effects, "a suspended member cannot log in: "
                    "list logins_refused")
    return Suspension(summary=str(summary), effects=tuple(effects))


def _secret(index: int, item: object, params: Mapping[str, Parameter], file: str
            ) -> SecretSpec:
    """One entry of `secrets:`."""
    spec = checks.mapping(item, file, f"secrets[{index}]")
    errors = checks.Collector()
    with errors.check():
        checks.refuse_unknown_keys(spec, ("name", "kind", "length", "bits", "var", "hash"),
                                   file, f"secrets[{index}]")
    if spec.get("kind") not in SECRET_KINDS:
        with errors.check():
            checks.fail(file, f"secrets[{index}].kind", spec.get("kind"),
                        f"must be one of {', '.join(SECRET_KINDS)}")
    for key in ("name", "var"):
        if (key == "name" or key in spec) and not SECRET_NAME_RE.match(str(spec.get(key))):
            with errors.check():
                checks.fail(file, f"secrets[{index}].{key}", spec.get(key),
                            "must be a lowercase identifier")
    if spec.get("kind") == "per_mailbox_password" and "mailboxes" not in params:
        with errors.check():
            checks.fail(file, f"secrets[{index}].kind", spec["kind"],
                        "needs a `mailboxes` parameter")
    if "hash" in spec and (spec.get("kind") != "password" or spec["hash"] not in SECRET_HASHES):
        with errors.check():
            checks.fail(file, f"secrets[{index}].hash", spec["hash"],
                        f"a password may be hashed with {', '.join(SECRET_HASHES)}")
    errors.done()
    return SecretSpec(name=str(spec["name"]), kind=str(spec["kind"]),
                      length=int(spec.get("length", 32)), bits=int(spec.get("bits", 2048)),
                      var=str(spec.get("var", "")), hash=str(spec.get("hash", "")))


def parse_service(raw: bytes, file: str) -> Service:
    """Check and build one service definition from the bytes of its file.

    Every problem of the file is reported at once. `dns_placeholders` lists the placeholders
    its hooks supply (the contract test checks that the hooks' `dns_placeholders` are the
    same); DNS templates may name them too.
    """
    data = checks.mapping(load_bytes(raw, file), file, "")
    errors = checks.Collector()
    with errors.check():
        checks.refuse_unknown_keys(data, _SERVICE_KEYS, file, "")
    for key in ("name", "description", "group", "role"):
        if not isinstance(data.get(key), str):
            with errors.check():
                checks.fail(file, key, data.get(key), "required string")
    if data.get("status") not in STATUSES:
        with errors.check():
            checks.fail(file, "status", data.get("status"),
                        f"must be one of {', '.join(STATUSES)}")
    params: dict[str, Parameter] = {}
    with errors.check():
        for name, spec in checks.mapping(data.get("parameters"), file, "parameters").items():
            with errors.check():
                params[name] = _parameter(name, spec, file)
    cost: dict[str, Any] = {}
    with errors.check():
        cost = checks.mapping(data.get("cost"), file, "cost")
        checks.refuse_unknown_keys(cost, ("ram_mb", "disk_gb"), file, "cost")
    secrets = []
    with errors.check():
        for index, item in enumerate(checks.sequence(data.get("secrets"), file, "secrets")):
            with errors.check():
                secrets.append(_secret(index, item, params, file))
    dns_extra: frozenset[str] = frozenset()
    with errors.check():
        dns_extra = frozenset(str(name) for name in checks.sequence(
            data.get("dns_placeholders", []), file, "dns_placeholders"))
    for name in sorted(dns_extra):
        if name in DNS_PLACEHOLDERS or not SECRET_NAME_RE.match(name):
            with errors.check():
                checks.fail(file, "dns_placeholders", name, "must be a new lowercase identifier",
                            hint=f"always known: {', '.join(sorted(DNS_PLACEHOLDERS))}")
    dns_known = DNS_PLACEHOLDERS | dns_extra
    available = data.get("status") == "available"
    ports: tuple[Port, ...] = ()
    with errors.check():
        ports = _ports(data.get("ports"), file)
        if available and not ports:
            checks.fail(file, "ports", [], "an available service declares the ports it "
                        "listens on")
    systemd: tuple[str, ...] = ()
    with errors.check():
        systemd = _systemd(data.get("systemd", []), file)
    version = 1
    with errors.check():
        version = checks.integer(data.get("version", 1), file, "version", 1)
    dns: list[dict[str, str]] = []
    with errors.check():
        for i, record in enumerate(checks.sequence(data.get("dns"), file, "dns")):
            with errors.check():
                dns.append(_dns_record(record, file, f"dns[{i}]", dns_known))
    data_paths: dict[str, Any] = {}
    with errors.check():
        data_paths = _data(data.get("data"), params, file)
    suspension = None
    with errors.check():
        suspension = _suspension(data.get("suspension"), file, available)
    member_ssh_keys = False
    with errors.check():
        member_ssh_keys = checks.boolean(data.get("member_ssh_keys", False), file,
                                         "member_ssh_keys")
    errors.done()
    return Service(
        name=data["name"], description=data["description"], group=data["group"],
        role=data["role"], version=version,
        needs_domain=bool(data.get("needs_domain", False)), parameters=params,
        cost={key: str(cost.get(key, "0")) for key in ("ram_mb", "disk_gb")},
        secrets=tuple(secrets), dns=tuple(dns), data=data_paths,
        digest=hashlib.sha256(raw).hexdigest(), status=str(data["status"]),
        ports=ports, systemd=systemd, suspension=suspension, dns_extra=dns_extra,
        member_ssh_keys=member_ssh_keys,
    )


def services_dir() -> Path:
    """The folder holding one folder per service (services/ beside playbooks/ and roles/)."""
    return layout.content_root() / layout.SERVICES_DIR


@cache
def load_hooks(folder: Path, name: str) -> Any:
    """The hook object of the service in `folder` (`HOOKS` in its hooks.py), or None.

    The module is loaded by file path under the name `coophost_service_<name>`: a service is
    born in its one folder, never as a module inside the coophost package.
    """
    path = folder / layout.HOOKS_FILE
    if not path.is_file():
        return None
    label = f"{layout.SERVICES_DIR}/{folder.name}/{layout.HOOKS_FILE}"
    module_name = f"coophost_service_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise ConfigError(f"{label}: cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    hooks = getattr(module, "HOOKS", None)
    if hooks is None:
        raise ConfigError(f"{label}: defines no HOOKS object (see coophost.services)")
    return hooks


def service_label(name: str) -> str:
    """How messages name a service's catalogue entry: services/<name>/coophost.yml."""
    return f"{layout.SERVICES_DIR}/{name}/{layout.SERVICE_FILE}"


@cache
def load_catalogue(directory: Path | None = None) -> Catalogue:
    """Every service folder in `directory` (default: services/), its coophost.yml checked.

    The `name:` in a folder's coophost.yml must match the folder's name.
    """
    directory = services_dir() if directory is None else directory
    services: dict[str, Service] = {}
    digest = hashlib.sha256()
    errors = checks.Collector()
    for path in sorted(directory.glob(f"*/{layout.SERVICE_FILE}")):
        folder = path.parent
        label = service_label(folder.name)
        raw = path.read_bytes()
        with errors.check():
            service = parse_service(raw, label)
            if service.name != folder.name:
                checks.fail(label, "name", service.name, "must match the folder name")
            services[service.name] = replace(service, folder=folder)
            digest.update(folder.name.encode() + b"\0" + raw + b"\0")
            hooks_file = folder / layout.HOOKS_FILE
            if hooks_file.is_file():
                digest.update(hooks_file.read_bytes() + b"\0")
            elif service.dns_extra:
                checks.fail(label, "dns_placeholders", sorted(service.dns_extra),
                            f"need a {layout.HOOKS_FILE} to supply them")
    errors.done()
    return Catalogue(services=services, digest=digest.hexdigest())
