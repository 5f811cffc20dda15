"""The contract every service folder meets: what `services/<name>/` must hold, checked.

`check_service(folder, root)` returns what is missing or wrong (empty when the folder meets
it); tests/unit/test_service_contract.py runs it over every folder of services/, and on fake
folders to show that each missing part is named. `root` is the content root holding
playbooks/ and services/.

An available service (members may have it) is a complete role:
- coophost.yml: a valid catalogue entry (typed parameters, known placeholders in its DNS
  templates and data paths, declared ports, what suspension does) whose name and role are
  the folder's name;
- tasks/main.yml, defaults/main.yml, handlers/, meta/main.yml, README.md;
- meta/argument_specs.yml requiring what coophost sends: the units list
  (`coophost_<name>_units`, or `<name>_units` defaulting to it) whose items require `member`
  (with `slug`, `owner` and `status`) and `settings`;
- tasks or templates that read the member's status (a suspended member cannot log in);
- playbooks/stages/<name>.yml including the role on the service's group, imported by both
  playbooks/<name>.yml (a play on that group) and site.yml's single play;
- molecule/default/molecule.yml and converge.yml.
A coming service (listed, not offered) holds coophost.yml and a README.md, and either no role
files or a role being built: one with tasks/main.yml is held to everything above but the
playbooks (no play deploys it yet, and no member can have it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from coophost.errors import CoophostError
from coophost.layout import HOOKS_FILE, SERVICE_FILE, SERVICES_DIR
from coophost.registry.catalogue import Service, load_hooks, parse_service, service_label

ROLE_FILES = ("tasks/main.yml", "defaults/main.yml", "meta/main.yml")
ROLE_DIRS = ("handlers",)
MOLECULE_FILES = ("molecule/default/molecule.yml", "molecule/default/converge.yml")
# What a coming service may not hold yet: anything of a role.
ROLE_PARTS = ("tasks", "defaults", "handlers", "meta", "templates", "files", "vars", "molecule",
              "library", "filter_plugins")
MEMBER_REQUIRED = ("slug", "owner", "status")
STATUS_RE = re.compile(r"member\.status\b|member\[['\"]status['\"]\]|'member\.status'")


def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        return exc


def _required(options: Any, name: str) -> dict[str, Any] | None:
    """The spec of option `name` when it is marked required, else None."""
    spec = options.get(name) if isinstance(options, dict) else None
    return spec if isinstance(spec, dict) and spec.get("required") is True else None


def check_units_spec(folder: Path, name: str) -> list[str]:
    """The role's argument spec requires the units list's member (with status) and settings."""
    where = f"{SERVICES_DIR}/{name}/meta/argument_specs.yml"
    data = _yaml(folder / "meta" / "argument_specs.yml")
    if isinstance(data, Exception) or not isinstance(data, dict):
        return [f"{where}: missing or not YAML (the role's argument spec)"]
    options = ((data.get("argument_specs") or {}).get("main") or {}).get("options") or {}
    core_var = f"coophost_{name}_units"
    if core_var in options:
        units_var = core_var
    elif f"{name}_units" in options:
        units_var = f"{name}_units"
        defaults = _yaml(folder / "defaults" / "main.yml")
        if not isinstance(defaults, dict) or core_var not in str(defaults.get(units_var, "")):
            return [f"{SERVICES_DIR}/{name}/defaults/main.yml: {units_var} must default to "
                    f"{core_var} (what coophost renders)"]
    else:
        return [f"{where}: no option {core_var} (or {name}_units defaulting to it)"]
    units = options[units_var]
    problems = []
    if not isinstance(units, dict) or units.get("type") != "list" \
            or units.get("elements") != "dict":
        problems.append(f"{where}: {units_var} must be a list of dicts")
        return problems
    item = units.get("options") or {}
    member = _required(item, "member")
    if member is None:
        problems.append(f"{where}: {units_var}[].member must be required")
    else:
        for key in MEMBER_REQUIRED:
            if _required(member.get("options") or {}, key) is None:
                problems.append(f"{where}: {units_var}[].member.{key} must be required")
    if _required(item, "settings") is None:
        problems.append(f"{where}: {units_var}[].settings must be required")
    return problems


def _plays(path: Path) -> list[dict[str, Any]]:
    data = _yaml(path)
    return [play for play in data if isinstance(play, dict)] if isinstance(data, list) else []


def _includes_role(tasks: list[dict[str, Any]], role: str, group: str) -> bool:
    """A task list that includes `role` on the hosts of `group` (a `when` naming it)."""
    for task in tasks:
        include = task.get("ansible.builtin.include_role") or task.get("include_role") or {}
        if isinstance(include, dict) and include.get("name") == role:
            return f"'{group}' in group_names" in str(task.get("when", ""))
    return False


def _imports(play: dict[str, Any], tasks_file: str) -> bool:
    """A play (or a task list's task) that imports `tasks_file`."""
    return any(isinstance(task, dict) and str(task.get(
        "ansible.builtin.import_tasks", task.get("import_tasks"))) == tasks_file
        for task in play.get("tasks") or ())


def check_playbooks(root: Path, service: Service) -> list[str]:
    """The service's stage is complete and imported where it must be.

    stages/<name>.yml includes the role on the service's group, and both playbooks/<name>.yml
    (a play on that group) and site.yml's single play import it.
    """
    name = service.name
    stage = f"stages/{name}.yml"
    problems = []
    data = _yaml(root / "playbooks" / stage)
    tasks = [t for t in data if isinstance(t, dict)] if isinstance(data, list) else []
    if not _includes_role(tasks, name, service.group):
        problems.append(f"playbooks/{stage}: needs an include_role of {name} "
                        f"when \"'{service.group}' in group_names\"")
    if not any(play.get("hosts") == service.group and _imports(play, stage)
               for play in _plays(root / "playbooks" / f"{name}.yml")):
        problems.append(f"playbooks/{name}.yml: needs a play on hosts `{service.group}` "
                        f"importing {stage}")
    if not any(_imports(play, stage) for play in _plays(root / "playbooks" / "site.yml")):
        problems.append(f"playbooks/site.yml: does not import {stage}")
    return problems


def honours_status(folder: Path) -> bool:
    """Whether the role's tasks or templates read the unit's member status."""
    for part in ("tasks", "templates"):
        for path in sorted((folder / part).rglob("*")):
            if path.is_file() and STATUS_RE.search(path.read_text(errors="replace")):
                return True
    return False


def check_service(folder: Path, root: Path) -> list[str]:
    """What service folder `folder` lacks or gets wrong ([] when it meets the contract)."""
    name = folder.name
    label = service_label(name)
    entry = folder / SERVICE_FILE
    if not entry.is_file():
        return [f"{label}: missing (the service's catalogue entry)"]
    try:
        service = parse_service(entry.read_bytes(), label)
        hooks = load_hooks(folder, name) if (folder / HOOKS_FILE).is_file() else None
    except CoophostError as exc:
        return [str(exc)]
    problems = []
    supplied = frozenset(getattr(hooks, "dns_placeholders", ()))
    if supplied != service.dns_extra:
        problems.append(f"{label}: dns_placeholders {sorted(service.dns_extra)} must be what "
                        f"its hooks supply ({sorted(supplied)})")
    if service.name != name:
        problems.append(f"{label}: name {service.name!r} must be the folder's name {name!r}")
    if service.role != name:
        problems.append(f"{label}: role {service.role!r} must be the folder's name {name!r} "
                        "(the folder is the role)")
    if not (folder / "README.md").is_file():
        problems.append(f"{SERVICES_DIR}/{name}/README.md: missing")
    building = (folder / "tasks" / "main.yml").is_file()
    if not service.available and not building:
        present = [part for part in ROLE_PARTS if (folder / part).exists()]
        if present:
            problems.append(f"{SERVICES_DIR}/{name}: a coming service has no role yet, but "
                            f"holds {', '.join(present)} (make it available, or remove them)")
        return problems
    for file in (*ROLE_FILES, *MOLECULE_FILES):
        if not (folder / file).is_file():
            problems.append(f"{SERVICES_DIR}/{name}/{file}: missing")
    for directory in ROLE_DIRS:
        if not (folder / directory).is_dir():
            problems.append(f"{SERVICES_DIR}/{name}/{directory}/: missing")
    problems += check_units_spec(folder, name)
    if not honours_status(folder):
        problems.append(f"{SERVICES_DIR}/{name}: no task or template reads the unit's "
                        "member.status (a suspended member must not log in)")
    if service.available:
        problems += check_playbooks(root, service)
    return problems
