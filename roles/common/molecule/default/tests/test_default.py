"""The hardened baseline, checked on the converged host."""

import re

import pytest


def test_admin_has_exactly_its_key_and_no_password(host):
    ada = host.user("ada")
    assert ada.exists
    assert "sudo" in ada.groups
    assert ada.password in ("!", "*")
    keys = host.file("/home/ada/.ssh/authorized_keys")
    assert keys.mode == 0o600
    assert keys.content_string.count("ssh-ed25519") == 1
    assert not host.user("retired").exists


def test_sudoers_file_is_valid(host):
    assert host.run("visudo -cf /etc/sudoers.d/coophost-admins").rc == 0


@pytest.mark.parametrize(("setting", "value"), [
    ("passwordauthentication", "no"),
    ("kbdinteractiveauthentication", "no"),
    ("permitrootlogin", "no"),
    ("authenticationmethods", "publickey"),
    ("x11forwarding", "no"),
    ("maxauthtries", "3"),
])
def test_sshd_effective_settings(host, setting, value):
    effective = host.check_output("sshd -T")
    assert f"{setting} {value}" in effective.splitlines()


def test_only_admins_may_forward_tcp_through_the_host(host):
    def forwarding(user):
        effective = host.check_output(f"sshd -T -C user={user},host=client,addr=192.0.2.1")
        return {line.split()[1] for line in effective.splitlines()
                if line.startswith("allowtcpforwarding ")}

    assert forwarding("ada") == {"local"}  # an admin can be routed through (ProxyJump)
    assert forwarding("git") == {"no"}  # a service account cannot
    assert forwarding("nobody") == {"no"}


def test_sshd_runs_and_listens(host):
    assert host.service("ssh").is_running
    assert host.socket("tcp://0.0.0.0:22").is_listening


def open_tcp_ports(rules):
    """The ports of every `tcp dport ... accept` rule, parsed (a set or a single port)."""
    ports = set()
    for found in re.finditer(r"tcp dport (\{[^}]*\}|\S+) accept", rules):
        ports |= {int(p) for p in found.group(1).strip("{} ").split(",")}
    return ports


def test_firewall_opens_only_placed_services(host):
    rules = host.check_output("nft list table inet coophost")
    assert "policy drop" in rules
    # ssh, mail, web (nextcloud), ACME HTTP-01 and the extra port; exactly those.
    assert open_tcp_ports(rules) == {22, 25, 80, 443, 465, 587, 993, 8443}


def test_open_ports_are_parsed_not_searched():
    rules = "tcp dport { 22, 8443 } accept\ntcp dport 25 accept"
    assert open_tcp_ports(rules) == {22, 25, 8443}  # 443 is not inside 8443


def test_firewall_survives_restart_and_leaves_other_tables(host):
    host.check_output("nft add table inet someone-else")
    try:
        host.check_output("systemctl restart nftables")
        tables = host.check_output("nft list tables")
        assert "inet coophost" in tables
        assert "inet someone-else" in tables
    finally:
        host.run("nft delete table inet someone-else")


def test_fail2ban_has_ssh_and_mail_jails(host):
    assert host.service("fail2ban").is_running
    jails = host.check_output("fail2ban-client status")
    for jail in ("sshd", "postfix", "dovecot"):
        assert jail in jails


def test_unattended_upgrades_security_only(host):
    dump = host.check_output("apt-config dump Unattended-Upgrade::Origins-Pattern")
    patterns = [line for line in dump.splitlines() if "::" in line and "origin=" in line]
    assert patterns
    assert all("Debian-Security" in line for line in patterns)
    periodic = host.check_output("apt-config dump APT::Periodic::Unattended-Upgrade")
    assert '"1"' in periodic


def test_time_sync_enabled(host):
    assert host.service("systemd-timesyncd").is_enabled
