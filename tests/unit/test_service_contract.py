"""Every services/* folder meets the service contract (coophost/services/contract.py).

Adding a service = adding one folder; this test says what it lacks. The checker itself is
tested on fake folders: one complete fake service, written as a single folder in a tmp
content root, loads into the catalogue and passes; taking away any part makes it fail,
naming that part.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from coophost.errors import ConfigError
from coophost.registry.catalogue import load_catalogue
from coophost.services import DefaultHooks, hooks_for
from coophost.services.contract import check_service

REPO = Path(__file__).resolve().parents[2]
FOLDERS = sorted(p for p in (REPO / "services").iterdir() if p.is_dir())


def test_there_are_service_folders() -> None:
    assert [p.name for p in FOLDERS] == sorted(load_catalogue().services)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_every_service_folder_meets_the_contract(folder: Path) -> None:
    assert check_service(folder, REPO) == []


def test_each_host_gets_the_tcp_ports_of_the_services_placed_on_it(coop: Path) -> None:
    """roles/common's firewall opens what render writes: the catalogue's ports, per host.

    Those of the services placed there, and of every service whose group the host is in (its
    role runs there even with no unit: a relay for a moved unit's mail needs port 25).
    """
    from coophost.desired.hostvars import host_files

    texts, _ = host_files(coop)
    catalogue = load_catalogue()
    seen = 0
    for text in texts.values():
        data = yaml.load(text, Loader=_AnsibleTags)
        ports = data["coophost_service_ports"]
        assert set(ports) == set(data["coophost_services"]) | set(data["coophost_service_groups"])
        for name, opened in ports.items():
            declared = sorted(p.port for p in catalogue.services[name].ports
                              if p.protocol == "tcp")
            assert opened == declared, name
            seen += 1
    assert seen, "no host runs a service"
    # a host in the mail group with no unit left keeps mail's ports open
    hosts = coop / "members"
    for member in hosts.glob("*.yml"):
        member.write_text(member.read_text().replace("mail: h2", "mail: h1"))
    texts, _ = host_files(coop)
    h2 = yaml.load(texts["h2"], Loader=_AnsibleTags)
    assert "mail" not in h2["coophost_services"] and 25 in h2["coophost_service_ports"]["mail"]
    common = (REPO / "roles/common/defaults/main.yml").read_text()
    assert 'common_service_ports: "{{ coophost_service_ports | default({}) }}"' in common


class _AnsibleTags(yaml.SafeLoader):
    """Reads a rendered vars file: !unsafe strings as plain strings, !vault as its text."""


_AnsibleTags.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
_AnsibleTags.add_constructor("!vault", lambda loader, node: loader.construct_scalar(node))


def test_mail_has_hooks_and_a_service_without_hooks_gets_the_defaults() -> None:
    services = load_catalogue().services
    assert type(services["mail"].hooks).__module__ == "coophost_service_mail"
    assert type(services["git"].hooks).__module__ == "coophost_service_git"
    assert type(services["nextcloud"].hooks).__module__ == "coophost_service_nextcloud"
    assert isinstance(hooks_for(services["discourse"]), DefaultHooks)
    assert services["discourse"].hooks is None


def test_the_core_names_no_service() -> None:
    """No string literal in coophost/ is a service's name: the core asks the catalogue and the
    hooks. The lab's probes of a service (coophost/lab/<service>*.py, which that service's
    hooks.py calls: mailcheck, gitprobe) are the one exception."""
    import ast

    names = set(load_catalogue().services)
    found = []
    for path in sorted((REPO / "coophost").rglob("*.py")):
        if path.parent.name == "lab" and path.name.startswith(tuple(names)):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert found == []


# ---- a fake service, born in one folder ----------------------------------------------------

ENTRY = """\
name: {name}
description: A fake service for the contract test.
group: {name}
role: {name}
status: available
version: 1
needs_domain: false
parameters:
  vhost: {{type: vhost, default: "fake.{{domain}}", fallback: "{{slug}}.fake.{{coop_domain}}"}}
  quota_gb: {{type: int, default: 1, min: 1, max: 10}}
cost: {{ram_mb: "64", disk_gb: "quota_gb"}}
secrets:
  - {{name: db_password, kind: password, length: 32}}
dns_placeholders: [fake_token]
dns:
  - {{type: A, name: "{{vhost}}", value: "{{host_ipv4}}"}}
  - {{type: TXT, name: "{{vhost}}", value: "token={{fake_token}}"}}
ports:
  - {{port: 443, protocol: tcp, description: HTTPS}}
suspension:
  summary: A suspended member's site refuses logins.
  does: [logins_refused, site_unavailable]
data:
  paths: ["/srv/{name}/{{owner}}"]
  dumps:
    - {{kind: database, engine: postgresql, name: "{name}_{{slug}}"}}
"""

HOOKS = """\
from coophost.services import DefaultHooks, DnsValues


class Hooks(DefaultHooks):
    dns_placeholders = frozenset({"fake_token"})

    def dns_values(self, member, settings, secret):
        return DnsValues({"fake_token": ["abc"]})


HOOKS = Hooks()
"""

SPEC = """\
argument_specs:
  main:
    short_description: A fake service
    options:
      {name}_units:
        type: list
        elements: dict
        options:
          member:
            type: dict
            required: true
            options:
              slug: {{type: str, required: true}}
              owner: {{type: str, required: true}}
              status: {{type: str, required: true}}
          settings: {{type: dict, required: true}}
"""

ROLE = {
    "tasks/main.yml": "- name: Refuse suspended members\n  ansible.builtin.debug:\n"
                      "    msg: \"{{{{ {name}_units | map(attribute='member.status') }}}}\"\n",
    "defaults/main.yml": "{name}_units: \"{{{{ coophost_{name}_units | default([]) }}}}\"\n",
    "handlers/main.yml": "[]\n",
    "meta/main.yml": "galaxy_info: {{role_name: {name}}}\ndependencies: []\n",
    "README.md": "# {name}\n",
    "molecule/default/molecule.yml": "driver: {{name: docker}}\n",
    "molecule/default/converge.yml": "- hosts: all\n  roles: [{name}]\n",
}


def make_root(tmp_path: Path, name: str = "fake") -> Path:
    """A content root: playbooks (site.yml importing the service's) and one service folder."""
    root = tmp_path / "content"
    folder = root / "services" / name
    for relative, text in {"coophost.yml": ENTRY, "hooks.py": HOOKS,
                           "meta/argument_specs.yml": SPEC, **ROLE}.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text if relative == "hooks.py" else text.format(name=name))
    books = root / "playbooks"
    (books / "stages").mkdir(parents=True)
    (books / "stages" / f"{name}.yml").write_text(
        f"- name: Fake\n  ansible.builtin.include_role:\n    name: {name}\n"
        f"  when: \"'{name}' in group_names\"\n")
    imports = f"  tasks:\n    - ansible.builtin.import_tasks: stages/{name}.yml\n"
    (books / f"{name}.yml").write_text(f"- name: Fake\n  hosts: {name}\n{imports}")
    (books / "site.yml").write_text(f"- name: Site\n  hosts: all\n{imports}")
    return root


def test_a_fake_service_in_one_folder_loads_and_meets_the_contract(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    folder = root / "services" / "fake"
    catalogue = load_catalogue(root / "services")
    service = catalogue.services["fake"]
    assert service.available and service.folder == folder
    assert [(p.port, p.protocol) for p in service.ports] == [(443, "tcp")]
    assert service.suspension is not None and "logins_refused" in service.suspension.effects
    assert hooks_for(service).dns_placeholders == {"fake_token"}  # its hook's placeholder
    assert check_service(folder, root) == []


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


@pytest.mark.parametrize(("part", "named"), [
    ("tasks/main.yml", "services/fake/tasks/main.yml: missing"),
    ("defaults/main.yml", "services/fake/defaults/main.yml"),
    ("handlers", "services/fake/handlers/: missing"),
    ("meta/main.yml", "services/fake/meta/main.yml: missing"),
    ("meta/argument_specs.yml", "services/fake/meta/argument_specs.yml: missing"),
    ("README.md", "services/fake/README.md: missing"),
    ("molecule/default/molecule.yml", "services/fake/molecule/default/molecule.yml: missing"),
    ("molecule/default/converge.yml", "services/fake/molecule/default/converge.yml: missing"),
    ("coophost.yml", "services/fake/coophost.yml: missing"),
])
def test_the_contract_names_a_missing_part(tmp_path: Path, part: str, named: str) -> None:
    root = make_root(tmp_path)
    folder = root / "services" / "fake"
    _remove(folder / part)
    problems = check_service(folder, root)
    assert any(named in problem for problem in problems), problems


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(("file", "old", "new", "named"), [
    ("services/fake/meta/argument_specs.yml", "status: {type: str, required: true}",
     "status: {type: str}", "fake_units[].member.status must be required"),
    ("services/fake/meta/argument_specs.yml", "          settings: {type: dict, required: true}",
     "          settings: {type: dict}", "fake_units[].settings must be required"),
    ("services/fake/meta/argument_specs.yml", "      fake_units:", "      other_units:",
     "no option coophost_fake_units"),
    ("services/fake/defaults/main.yml", "coophost_fake_units", "something_else",
     "fake_units must default to coophost_fake_units"),
    ("services/fake/tasks/main.yml", "member.status", "member.slug",
     "no task or template reads the unit's member.status"),
    ("playbooks/fake.yml", "hosts: fake", "hosts: all", "playbooks/fake.yml: needs a play"),
    ("playbooks/fake.yml", "stages/fake.yml", "stages/other.yml",
     "playbooks/fake.yml: needs a play"),
    ("playbooks/stages/fake.yml", "'fake' in", "'other' in",
     "playbooks/stages/fake.yml: needs an include_role of fake"),
    ("playbooks/site.yml", "fake.yml", "other.yml", "site.yml: does not import stages/fake.yml"),
    ("services/fake/coophost.yml", "  - {port: 443, protocol: tcp, description: HTTPS}\n", "",
     "an available service declares the ports it listens on"),
    ("services/fake/coophost.yml", "  does: [logins_refused, site_unavailable]",
     "  does: [site_unavailable]", "suspension.does"),
    ("services/fake/coophost.yml", '"/srv/fake/{owner}"', '"/srv/fake/{member}"',
     "data.paths[0]: 'member': unknown placeholder"),
    ("services/fake/coophost.yml", '"token={fake_token}"', '"token={other_token}"',
     "dns[1].value: 'other_token': unknown placeholder"),
    ("services/fake/coophost.yml", "{type: int, default: 1", "{default: 1",
     "parameters.quota_gb.type"),
    ("services/fake/coophost.yml", "engine: postgresql", "engine: mongodb",
     "data.dumps[0].engine: 'mongodb': backups can dump only postgresql"),
    ("services/fake/coophost.yml", "kind: database", "kind: files",
     "data.dumps[0].kind: 'files': must be database"),
    ("services/fake/coophost.yml", "role: fake", "role: other", "role 'other' must be"),
    ("services/fake/hooks.py", '{"fake_token"}', '{"fake_token", "more"}',
     "dns_placeholders ['fake_token'] must be what its hooks supply (['fake_token', 'more'])"),
])
def test_the_contract_names_what_is_wrong(tmp_path: Path, file: str, old: str, new: str,
                                          named: str) -> None:
    root = make_root(tmp_path)
    _edit(root / file, old, new)
    problems = check_service(root / "services" / "fake", root)
    assert any(named in problem for problem in problems), problems


def test_a_coming_service_has_no_role(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    folder = root / "services" / "fake"
    _edit(folder / "coophost.yml", "status: available", "status: coming")
    (folder / "tasks" / "main.yml").unlink()
    problems = check_service(folder, root)
    assert len(problems) == 1
    assert "a coming service has no role yet, but holds tasks, defaults, handlers, meta, " \
           "molecule" in problems[0]
    for part in ("tasks", "defaults", "handlers", "meta", "molecule"):
        shutil.rmtree(folder / part)
    assert check_service(folder, root) == []


def test_a_coming_service_may_hold_a_complete_role_not_yet_in_the_playbooks(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    folder = root / "services" / "fake"
    _edit(folder / "coophost.yml", "status: available", "status: coming")
    for playbook in ("fake.yml", "stages/fake.yml"):
        (root / "playbooks" / playbook).unlink()
    assert check_service(folder, root) == []
    # but it is held to the rest of the contract
    (folder / "meta" / "argument_specs.yml").unlink()
    assert any("argument_specs.yml" in p for p in check_service(folder, root))


def test_a_broken_entry_is_named_by_its_folder(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / "services" / "fake" / "coophost.yml").write_text(textwrap.dedent("""\
        name: fake
        description: x
        group: fake
        role: fake
        status: sometimes
        """))
    problems = check_service(root / "services" / "fake", root)
    assert problems and problems[0].startswith("services/fake/coophost.yml: status")


def test_hooks_load_only_when_asked(tmp_path: Path) -> None:
    import sys

    root = make_root(tmp_path, "lazy")
    sys.modules.pop("coophost_service_lazy", None)
    service = load_catalogue(root / "services").services["lazy"]
    assert "coophost_service_lazy" not in sys.modules  # a warm plan never imports hooks
    assert service.hooks is not None and service.dns_extra == {"fake_token"}
    assert "coophost_service_lazy" in sys.modules


def test_a_dns_placeholder_without_hooks_is_refused(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / "services" / "fake" / "hooks.py").unlink()
    with pytest.raises(ConfigError, match=r"need a hooks\.py to supply them"):
        load_catalogue(root / "services")

