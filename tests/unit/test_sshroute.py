"""~/.ssh/config as OpenSSH reads it: HostName, User, Port, IdentityFile and ProxyJump, with
hosts.yml's explicit settings winning."""

from __future__ import annotations

from pathlib import Path

import pytest

from coophost.errors import ConfigError
from coophost.registry.model import HostEntry
from coophost.sshroute import Hop, config_path, load_config, route

CONFIG = """\
Host bastion
    HostName 192.0.2.10
    User jumper
    Port 2222
    IdentityFile ~/.ssh/bastion_key

Host h1 h1.coop.example
    HostName 10.0.0.11
    User admin
    Port 2200
    IdentityFile ~/.ssh/coop_key
    ProxyJump bastion

Host h2
    ProxyJump ops@bastion:2022,relay

Host relay
    HostName 192.0.2.20

Host loop
    ProxyJump looped

Host looped
    ProxyJump bastion
"""


@pytest.fixture
def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "config"
    path.write_text(CONFIG)
    return load_config(path)


def test_a_host_block_renames_the_address_and_sets_user_port_key_and_jump(config) -> None:
    found = route("h1", None, None, None, config)
    home = str(Path.home())
    assert found.target == Hop("10.0.0.11", 2200, "admin", (f"{home}/.ssh/coop_key",))
    assert found.jumps == (Hop("192.0.2.10", 2222, "jumper", (f"{home}/.ssh/bastion_key",)),)
    assert found.hops == (*found.jumps, found.target)


def test_what_hosts_yml_sets_wins_over_the_config(config) -> None:
    found = route("h1", 22, "coophost", "/keys/coop", config)
    assert found.target == Hop("10.0.0.11", 22, "coophost", ("/keys/coop",))
    assert len(found.jumps) == 1


def test_a_jump_chain_takes_user_and_port_from_the_spec_then_the_config(config) -> None:
    found = route("h2", None, None, None, config)
    assert found.jumps == (Hop("192.0.2.10", 2022, "ops", (str(Path.home()) +
                                                            "/.ssh/bastion_key",)),
                           Hop("192.0.2.20", 22, "root", ()))
    assert found.target == Hop("h2", 22, "root", ())


def test_no_config_or_no_matching_block_changes_nothing(config) -> None:
    assert route("h9", None, None, None, None).hops == (Hop("h9", 22, "root", ()),)
    assert route("h9", 2201, "me", None, config).hops == (Hop("h9", 2201, "me", ()),)


def test_a_jump_host_with_its_own_jump_is_refused(config) -> None:
    with pytest.raises(ConfigError, match="its own ProxyJump"):
        route("loop", None, None, None, config)


def test_a_malformed_jump_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("Host h1\n    ProxyJump user@bad host!\n")
    with pytest.raises(ConfigError, match="ProxyJump"):
        route("h1", None, None, None, load_config(path))


def test_the_config_file_is_chosen_by_the_environment(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COOPHOST_SSH_CONFIG", str(tmp_path / "mine"))
    assert config_path() == tmp_path / "mine"
    monkeypatch.setenv("COOPHOST_SSH_CONFIG", "")
    assert config_path() is None


def test_ssh_routes_an_inventory_host_by_its_explicit_settings_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from coophost.ssh import route_of

    path = tmp_path / "config"
    path.write_text(CONFIG)
    monkeypatch.setenv("COOPHOST_SSH_CONFIG", str(path))
    # hosts.yml sets ansible_host h1 and ansible_user; port and key come from the config
    entry = HostEntry("h1", "h1", 22, "coophost", None, (), {"ansible_user": "coophost"})
    found = route_of(entry)
    assert (found.target.hostname, found.target.port, found.target.user) == (
        "10.0.0.11", 2200, "coophost")
    # a jump host with an IdentityFile of its own keeps it
    assert found.jumps[0].key_files == (str(Path.home()) + "/.ssh/bastion_key",)
    # with the key in hosts.yml, a jump host without an IdentityFile is offered that key
    entry = HostEntry("h2", "h2", 22, "root", "/keys/coop", (), {"ansible_port": 22})
    found = route_of(entry)
    assert found.jumps[1].key_files == ("/keys/coop",)
    assert found.target.key_files == ("/keys/coop",)


def ssh_g(config: Path, host: str) -> dict[str, str]:
    """What the real OpenSSH client makes of `config` for `host` (`ssh -G`, nothing sent)."""
    import shutil
    import subprocess

    if shutil.which("ssh") is None:
        pytest.skip("the OpenSSH client is not installed")
    out = subprocess.run(["ssh", "-G", "-F", str(config), host], capture_output=True, text=True,
                         check=True).stdout
    result: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        result.setdefault(key, value)
    return result


def test_ansibles_ssh_reaches_each_jump_pinned_to_the_coops_known_hosts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from coophost.sshroute import host_route, openssh_config

    user_config = tmp_path / "config"
    user_config.write_text(CONFIG)
    config = load_config(user_config)
    entries = [HostEntry("h1", "h1", 22, "coophost", "/keys/coop", (), {"ansible_user": "c"}),
               HostEntry("h2", "h2", 22, "coophost", "/keys/coop", (), {"ansible_user": "c"}),
               HostEntry("h3", "192.0.2.30", 22, "coophost", None, (), {"ansible_user": "c"})]
    routes = {e.address: host_route(e, config) for e in entries}
    own = tmp_path / "coophost ssh_config"  # a space: quoted for the ProxyCommand's shell
    known = tmp_path / "known_hosts"
    own.write_text(openssh_config(routes, known, own, (user_config,)))
    # the target: our ProxyCommand wins over the sysadmin's ProxyJump, read after it
    h1 = ssh_g(own, "h1")
    assert h1["hostname"] == "10.0.0.11" and h1["port"] == "2200"
    assert "proxyjump" not in h1
    jump = h1["proxycommand"].split()[-1]
    assert h1["proxycommand"].startswith(f"ssh -F '{own}' -W [%h]:%p coophost-jump-")
    # the jump host: its own address, user, port and key, checked against the co-op's file
    first = ssh_g(own, jump)
    assert (first["hostname"], first["user"], first["port"]) == ("192.0.2.10", "jumper", "2222")
    assert first["stricthostkeychecking"] == "true"
    assert first["userknownhostsfile"] == str(known)
    assert first["globalknownhostsfile"] == "/dev/null"
    assert first["identityfile"].endswith("/.ssh/bastion_key")
    assert "proxycommand" not in first or first["proxycommand"] == "none"
    # a chain: the second hop is reached through the first, each pinned
    h2 = ssh_g(own, "h2")
    relay = ssh_g(own, h2["proxycommand"].split()[-1])
    assert relay["hostname"] == "192.0.2.20"
    assert relay["userknownhostsfile"] == str(known)
    assert relay["identityfile"] == "/keys/coop"  # no IdentityFile of its own: the host's key
    ops = ssh_g(own, relay["proxycommand"].split()[-1])
    assert (ops["hostname"], ops["user"], ops["port"]) == ("192.0.2.10", "ops", "2022")
    assert ops["identityfile"].endswith("/.ssh/bastion_key")
    # a host without jumps gets nothing from coophost
    assert "proxycommand" not in ssh_g(own, "192.0.2.30")


def test_ansibles_ssh_config_refuses_what_it_cannot_write_safely(tmp_path: Path) -> None:
    from coophost.sshroute import Route, openssh_config

    jump = Hop("bastion", 22, "ops")
    with pytest.raises(ConfigError, match="cannot be matched"):
        openssh_config({"h1 *": Route(Hop("h1", 22, "c"), (jump,))}, tmp_path / "k",
                       tmp_path / "c")
    with pytest.raises(ConfigError, match="quote"):
        openssh_config({"h1": Route(Hop("h1", 22, "c"), (Hop("b", 22, 'o"p'),))},
                       tmp_path / "k", tmp_path / "c")
