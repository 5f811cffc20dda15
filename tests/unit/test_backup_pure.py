"""Backups as plain data: who may push where, what each host gets, manifests compared."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from coophost.backup.model import (
    Entry,
    authorized_keys,
    compare,
    parse_manifest,
    repo_url,
    unit_dumps,
)
from coophost.backup.render import client_key, server_host_key
from coophost.desired.hostvars import host_files
from coophost.desired.units import compute
from coophost.secrets import INTERNAL_SPECS, generate, ssh_public_key
from tests.unit.conftest import HOSTS_YML

BACKUP_HOST = """\
    b1:
      {ansible_host: 127.0.0.1, ansible_port: 40009, coophost_fqdn: b1.lab.test,
       coophost_lab_ip: 172.30.0.9, coophost_capacity: {ram_mb: 1024, disk_gb: 400}}
"""


def with_backup_host(coop: Path) -> None:
    """Add b1, in group `backup` only, to the test co-op's hosts.yml."""
    text = HOSTS_YML.replace("  children:\n", BACKUP_HOST + "  children:\n")
    (coop / "hosts.yml").write_text(text + "    backup: {hosts: {b1: {}}}\n")


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
_Loader.add_constructor("!vault", lambda loader, node: "VAULT")


def test_each_service_host_is_confined_to_its_own_folder_append_only() -> None:
    text = authorized_keys({"h1": "ssh-ed25519 AAAA1", "h2": "ssh-ed25519 AAAA2"},
                           "ssh-ed25519 ADMIN")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines[0] == ('command="borg serve --append-only --restrict-to-path '
                        '/srv/borg/repos/h1",restrict ssh-ed25519 AAAA1 coophost-backup@h1')
    assert "--restrict-to-path /srv/borg/repos/h2\"" in lines[1]
    # only the controller's key may prune, and it is not append-only
    assert lines[2].startswith('command="borg serve --restrict-to-path /srv/borg/repos",')
    assert lines[2].count("--append-only") == 0


@pytest.mark.parametrize("name", ["h1 --foo", "../h1", "h1\"", "h1/x"])
def test_a_host_name_that_could_escape_its_forced_command_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="cannot name a backup folder"):
        authorized_keys({name: "ssh-ed25519 AAAA"}, "ssh-ed25519 ADMIN")


def test_repo_url_per_host_and_member_life() -> None:
    assert repo_url("172.30.0.9", "h1", "ada-books.1") == \
        "ssh://borg@172.30.0.9:2222/srv/borg/repos/h1/ada-books.1"
    assert repo_url("2001:db8::9", "h1", "a.1").startswith("ssh://borg@[2001:db8::9]:2222/")


def test_ssh_keys_are_openssh_ed25519() -> None:
    key = generate(INTERNAL_SPECS["_backup_admin"])
    assert key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert ssh_public_key(key).startswith("ssh-ed25519 AAAA")


MANIFEST = """\
# coophost-backup manifest: ada-books.1 mail
# <sha256 or L link target>  <size> <mtime_ns>  <path>
aa11  5 100  /var/mail/units/ada-books.1/a
bb22  7 200  /var/mail/units/ada-books.1/dir/b c
L../a  4 300  /var/mail/units/ada-books.1/link
"""


def test_manifest_round_trip_and_spaces_in_names() -> None:
    entries = parse_manifest(MANIFEST)
    assert entries["/var/mail/units/ada-books.1/dir/b c"] == Entry("bb22", 7, 200)
    assert entries["/var/mail/units/ada-books.1/link"].value == "L../a"


def test_malformed_manifest_is_an_error() -> None:
    with pytest.raises(ValueError, match="line 1"):
        parse_manifest("aa11 5 100 /x\n")


def test_compare_names_missing_changed_and_extra_files() -> None:
    want = parse_manifest(MANIFEST)
    same = dict(want)
    assert compare(want, same).ok
    got = dict(want)
    del got["/var/mail/units/ada-books.1/a"]
    got["/var/mail/units/ada-books.1/new"] = Entry("cc", 1, 1)
    got["/var/mail/units/ada-books.1/dir/b c"] = Entry("ff", 7, 200)  # same mtime: corrupt
    diff = compare(want, got)
    assert not diff.ok
    assert diff.missing == ("/var/mail/units/ada-books.1/a",)
    assert diff.extra == ("/var/mail/units/ada-books.1/new",)
    assert diff.changed == ("/var/mail/units/ada-books.1/dir/b c",)
    assert "1 missing" in diff.summary() and "1 changed" in diff.summary()


def test_a_file_written_while_archived_is_reported_not_failed() -> None:
    want = parse_manifest(MANIFEST)
    got = dict(want)
    got["/var/mail/units/ada-books.1/a"] = Entry("dd", 6, 999)  # mtime moved: written later
    diff = compare(want, got)
    assert diff.ok and diff.moving == ("/var/mail/units/ada-books.1/a",)
    assert "not checked" in diff.summary()


def test_rendered_backup_vars(coop: Path) -> None:
    with_backup_host(coop)
    texts, store = host_files(coop)
    desired = compute(coop)
    on_h1 = sorted(m for (m, _s), u in desired.units.items() if u.host == "h1")
    b1 = yaml.load(texts["b1"], Loader=_Loader)
    server = b1["coophost_backup_server"]
    assert server["port"] == 2222 and b1["coophost_host_ports"] == [2222]
    assert server["host_key"] == "VAULT"
    hosts_with_units = sorted({u.host for u in desired.units.values()})
    assert server["clients"] == hosts_with_units
    assert b1["coophost_backup_jobs"] == [] and b1["coophost_backup_client"] == {}
    h1 = yaml.load(texts["h1"], Loader=_Loader)
    client = h1["coophost_backup_client"]
    assert client["key"] == "VAULT" and client["name"] == "h1"
    # the backup host's borg sshd key is pinned, at the address the hosts reach it by
    host_key = store.public_key(server_host_key("b1"))
    assert client["known_hosts"] == [f"[172.30.0.9]:2222 {host_key}"]
    units = h1["coophost_backup_jobs"]
    assert sorted(u["slug"] for u in units) == on_h1
    for unit in units:
        assert unit["passphrase"] == "VAULT"
        assert unit["repos"] == [f"ssh://borg@172.30.0.9:2222/srv/borg/repos/h1/{unit['owner']}"]
        assert all(unit["owner"] in path for path in unit["paths"])
    # the server's authorized keys hold h1's public key, derived from the vault's private key
    assert store.public_key(client_key("h1")) in server["authorized_keys"]


def test_each_member_life_has_its_own_passphrase(coop: Path) -> None:
    with_backup_host(coop)
    _texts, store = host_files(coop)
    store.save()
    from coophost.backup.render import passphrase
    from coophost.registry.loader import load_registry

    owners = [m.owner for m in load_registry(coop).registry.members.values()]
    values = {store.value(passphrase(owner)) for owner in owners}
    assert len(values) == len(owners) and all(len(v) == 40 for v in values)
    # kept vault-encrypted in each member's secrets file, never in the clear
    for owner in owners:
        text = (coop / "secrets" / f"{owner}.yml").read_text()
        assert "_backup:" in text and store.value(passphrase(owner)) not in text


def test_the_backup_hosts_hash_follows_which_hosts_have_units(coop: Path) -> None:
    from coophost.backup.render import backup_hash_input
    from coophost.registry.loader import load_registry

    with_backup_host(coop)
    hosts = load_registry(coop).registry.hosts
    one = backup_hash_input(hosts["b1"], hosts, {"h1": True, "h2": False}, "v1")
    two = backup_hash_input(hosts["b1"], hosts, {"h1": True, "h2": True}, "v1")
    assert one["clients"] == ["h1"] and two["clients"] == ["h1", "h2"]
    assert backup_hash_input(hosts["b1"], hosts, {"h1": True}, "v2") != \
        backup_hash_input(hosts["b1"], hosts, {"h1": True}, "v1")  # the role's version
    # a service host without units pushes nothing; with units it names its backup hosts
    assert backup_hash_input(hosts["h2"], hosts, {"h2": False}, "v1") == {}
    assert backup_hash_input(hosts["h2"], hosts, {"h2": True}, "v1")["servers"] == \
        [["b1", "172.30.0.9"]]


def _service_with_dumps(engine: str, name: str):  # type: ignore[no-untyped-def]
    from coophost.registry.catalogue import Parameter, Service

    return Service(name="cloud", description="", group="cloud", role="cloud",
                   status="available", version=1, needs_domain=False,
                   parameters={"backend": Parameter("backend", "choice", "postgresql", "",
                                                    choices=("postgresql",))},
                   cost={}, secrets=(), dns=(),
                   data={"paths": ["/srv/cloud/{owner}"],
                         "dumps": [{"kind": "database", "engine": engine, "name": name}]})


def test_a_units_dumps_are_named_per_member_life_and_written_under_the_dump_folder() -> None:
    service = _service_with_dumps("{backend}", "cloud_{owner}")
    first = unit_dumps(service, "alice.1", "alice", {"backend": "postgresql"})
    later = unit_dumps(service, "alice.2", "alice", {"backend": "postgresql"})
    assert first == [{"engine": "postgresql", "name": "cloud_alice.1",
                      "file": "/var/lib/coophost-backup/dumps/alice.1/cloud/cloud_alice.1.sql"}]
    # a later member given the same slug gets another database and another dump file
    assert later[0]["name"] != first[0]["name"] and later[0]["file"] != first[0]["file"]


@pytest.mark.parametrize(("engine", "name", "named"), [
    ("mariadb", "cloud_{owner}", "engine 'mariadb' cannot be backed up"),
    ("postgresql", "Cloud {slug}", "name 'Cloud alice' is not a database name"),
    ("postgresql", "x" * 64, "is not a database name"),
])
def test_a_dump_backups_cannot_take_is_refused(engine: str, name: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        unit_dumps(_service_with_dumps(engine, name), "alice.1", "alice", {})


@pytest.mark.usefixtures("mail_with_a_database")
def test_a_drill_scans_the_dump_folder_of_a_unit_with_databases(coop: Path) -> None:
    # The dump folder is archived with the data and listed in the manifest: a drill compares
    # it too, or every drill of a unit with databases would find its dumps "missing".
    from coophost.backup.ops import units
    from coophost.registry.loader import load_registry

    found = {u.slug: u for u in units(load_registry(coop), "ada-books")}
    owner = found["ada-books"].owner
    assert found["ada-books"].dump_dirs == (f"/var/lib/coophost-backup/dumps/{owner}/mail",)


def test_restore_names_beside_a_long_database_fit_postgresql_and_stay_apart() -> None:
    # PostgreSQL cuts names at 63 bytes: a cut name could meet another database's, or lose the
    # time that makes each kept original distinct. coophost-backup shortens and adds a hash.
    import importlib.machinery
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "roles/backup/files/coophost-backup"
    loader = importlib.machinery.SourceFileLoader("coophost_backup_script", str(script))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    assert module.beside("cloud_gamma.3", "prev", "20261207T144500") == \
        "cloud_gamma.3_prev_20261207t144500"
    long_a = "nextcloud_" + "a" * 29 + ".0123456789ab"
    long_b = "nextcloud_" + "a" * 29 + ".ba9876543210"
    names = {module.beside(n, w, "20261207T144500") for n in (long_a, long_b)
             for w in ("prev", "restore")}
    assert len(names) == 4 and all(len(n) <= 63 for n in names)
    assert all(n.endswith("_20261207t144500") for n in names)
