"""`coophost host enrol`'s pure part (fingerprints, the pinning verdict, capacity, scripts) and
`coophost init`'s questions; the SSH steps are proven on a lab host (tests/integration)."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from coophost.cli import options
from coophost.cli.init import ask_missing
from coophost.enrol import plan
from coophost.enrol.plan import PinnedKey, Verdict
from coophost.enrol.run import controller
from coophost.errors import ConfigError, UsageError
from coophost.lab.keys import ssh_keypair
from coophost.ssh import known_hosts_entries


def _key() -> tuple[str, bytes, str]:
    """A new public key: (type, blob, the `type base64` line)."""
    line = " ".join(ssh_keypair("test").public.split()[:2])
    kind, b64 = line.split()
    return kind, base64.b64decode(b64), line


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")
def test_fingerprint_is_what_ssh_keygen_shows_on_the_console(tmp_path: Path) -> None:
    for _ in range(5):
        _kind, blob, line = _key()
        pub = tmp_path / "key.pub"
        pub.write_text(line + " root@host\n")
        shown = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                               check=True).stdout.split()[1]
        assert plan.fingerprint(blob) == shown
        assert plan.check_fingerprint(shown) == shown


@pytest.mark.parametrize("bad", ["", "SHA256:", "MD5:aa:bb", "SHA256:abc",
                                 "sha256:" + "A" * 43, "SHA256:" + "A" * 43 + "=",
                                 "SHA256:" + "A" * 42 + "!"])
def test_a_malformed_fingerprint_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError, match="not an OpenSSH SHA256 fingerprint"):
        plan.check_fingerprint(bad)


def test_known_hosts_name_is_bracketed_off_port_22() -> None:
    assert plan.known_hosts_name("192.0.2.1", 22) == "192.0.2.1"
    assert plan.known_hosts_name("192.0.2.1", 2222) == "[192.0.2.1]:2222"


def _pinned(names: tuple[str, ...], line: str) -> PinnedKey:
    kind, b64 = line.split()
    return PinnedKey(names, kind, b64)


def test_verdict_new_key_is_pinned_only_when_it_equals_the_fingerprint_or_is_confirmed() -> None:
    kind, blob, _ = _key()
    names = ("[192.0.2.1]:2222", "h1")
    right = plan.fingerprint(blob)
    wrong = plan.fingerprint(_key()[1])
    assert plan.pin_verdict(kind, blob, names, [], right) is Verdict.MATCHES
    assert plan.pin_verdict(kind, blob, names, [], wrong) is Verdict.DIFFERS_FROM_GIVEN
    assert plan.pin_verdict(kind, blob, names, [], None) is Verdict.ASK


def test_verdict_a_key_other_than_the_pinned_one_is_refused_whatever_the_fingerprint() -> None:
    kind, blob, line = _key()
    other = _key()[2]
    names = ("[192.0.2.1]:2222", "h1")
    by_address = [_pinned(("[192.0.2.1]:2222",), other)]
    by_name = [_pinned(("h1",), other)]
    for pinned in (by_address, by_name):
        for expected in (plan.fingerprint(blob), None):
            assert plan.pin_verdict(kind, blob, names, pinned, expected) \
                is Verdict.DIFFERS_FROM_PINNED
    # the same key pinned: nothing to ask, nothing to write
    same = [_pinned(("[192.0.2.1]:2222",), line)]
    assert plan.pin_verdict(kind, blob, names, same, None) is Verdict.ALREADY_PINNED
    assert plan.pin_verdict(kind, blob, names, same, plan.fingerprint(blob)) \
        is Verdict.ALREADY_PINNED
    assert plan.pin_verdict(kind, blob, names, same, plan.fingerprint(_key()[1])) \
        is Verdict.DIFFERS_FROM_GIVEN
    # a key pinned for another host is no concern of this one
    elsewhere = [_pinned(("[192.0.2.9]:22",), other)]
    assert plan.pin_verdict(kind, blob, names, elsewhere, None) is Verdict.ASK


def test_the_pinned_line_reads_back_as_that_key_and_keeps_the_file(tmp_path: Path) -> None:
    kind, blob, line = _key()
    before = "# pinned by hand\n[10.0.0.1]:22 " + _key()[2]  # no final newline
    text = plan.add_known_host(before, "[192.0.2.1]:2222", kind, blob)
    assert text.startswith(before + "\n")
    path = tmp_path / "known_hosts"
    path.write_text(text)
    entries = known_hosts_entries(path, strict=True)
    assert entries[-1].hostnames == ["[192.0.2.1]:2222"]
    assert entries[-1].key.asbytes() == blob
    assert plan.add_known_host("", "h", kind, blob) == f"h {line}\n"


MEMINFO = "MemTotal:        8039424 kB\nMemFree:         1234 kB\nMemAvailable:    4000000 kB\n"
DF = ("Filesystem     1024-blocks     Used Available Capacity Mounted on\n"
      "/dev/sda1       103081248 10485760  88080384      11% /\n")


def test_capacity_is_read_from_meminfo_and_df() -> None:
    assert plan.parse_mem_total_mb(MEMINFO) == 7851
    assert plan.parse_df_free_gb(DF) == 84
    assert plan.parse_mem_total_mb("MemFree: 10 kB\n") == 0
    assert plan.parse_df_free_gb("Filesystem ...\n") == 0


def test_capacity_leaves_the_documented_headroom() -> None:
    assert plan.declared_capacity(8192, 100) == {"ram_mb": 8192 - 1638, "disk_gb": 90}
    # small machines keep the minimum headroom
    assert plan.declared_capacity(2048, 10) == {"ram_mb": 2048 - 512, "disk_gb": 8}
    for ram, disk in ((512, 100), (8192, 2), (0, 0)):
        with pytest.raises(UsageError, match="nothing is left"):
            plan.declared_capacity(ram, disk)
    assert "20% of its RAM (at least 512 MB)" in plan.HEADROOM_HELP
    assert "10% of the free space on / (at least 2 GB)" in plan.HEADROOM_HELP


def test_sshd_problems_name_each_baseline_setting_not_in_force() -> None:
    good = "port 22\npermitrootlogin no\npasswordauthentication no\n" \
           "kbdinteractiveauthentication no\n"
    assert plan.sshd_problems(good) == []
    loose = good.replace("permitrootlogin no", "permitrootlogin yes").replace(
        "passwordauthentication no\n", "")
    assert plan.sshd_problems(loose) == ["permitrootlogin is yes, not no",
                                         "passwordauthentication is unset, not no"]


def test_the_drop_in_sets_every_baseline_setting() -> None:
    assert plan.sshd_problems(plan.SSHD_TEXT.lower().replace("#", "# ")) == []


@pytest.mark.parametrize("script", [plan.SETUP_SCRIPT, plan.HARDEN_SCRIPT])
def test_remote_scripts_are_valid_sh_and_take_values_as_arguments(script: str) -> None:
    assert subprocess.run(["sh", "-n", "-c", script], check=False).returncode == 0
    assert "{" not in script.replace("${", "")  # no value is pasted in by formatting


def test_setup_checks_sudoers_before_moving_it_into_place() -> None:
    script = plan.SETUP_SCRIPT
    assert script.index("visudo -cf") < script.index("mv -f \"$tmp\" /etc/sudoers.d/coophost")
    assert "NOPASSWD" in script and plan.SUDOERS_PATH in script


def test_as_root_goes_through_sudo_for_other_accounts() -> None:
    argv = ["/bin/sh", "-c", "x"]
    assert plan.as_root(argv, "root", with_password=True) == argv
    assert plan.as_root(argv, "ada", with_password=False) == ["sudo", "-n", "--", *argv]
    assert plan.as_root(argv, "ada", with_password=True)[:4] == ["sudo", "-S", "-p", ""]


@pytest.mark.parametrize("bad", ["", "Root", "a b", "-x", "a" * 33, "a;b"])
def test_bootstrap_user_must_be_a_unix_name(bad: str) -> None:
    with pytest.raises(UsageError):
        plan.check_user(bad, "--user")


# ---- the co-op side: init's controller key, and what enrol reads of it ----------------------

def _init(tmp_path: Path, cli) -> Path:
    root = tmp_path / "coop"
    code, _, err = cli("init", str(root), "--name", "N", "--domain", "n.test",
                       "--contact", "a@n.test")
    assert code == 0, err
    return root


def test_init_makes_a_private_controller_key_that_enrol_uses(tmp_path: Path, cli) -> None:
    root = _init(tmp_path, cli)
    key = root / "controller-key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert "controller-key\n" in (root / ".gitignore").read_text()
    user, path = controller(root)
    assert (user, path) == ("coophost", root.resolve() / "controller-key")
    import paramiko

    pub = (root / "controller-key.pub").read_text().split()
    assert paramiko.PKey.from_path(path).get_base64() == pub[1]


def test_enrol_refuses_a_coop_without_a_controller_key_or_with_root(tmp_path: Path, cli) -> None:
    root = _init(tmp_path, cli)
    hosts = root / "hosts.yml"
    text = hosts.read_text()
    hosts.write_text("\n".join(line for line in text.splitlines()
                               if "ansible_ssh_private_key_file" not in line) + "\n")
    with pytest.raises(ConfigError, match="ansible_ssh_private_key_file: unset"):
        controller(root)
    hosts.write_text(text.replace("ansible_user: coophost", "ansible_user: root"))
    with pytest.raises(ConfigError, match="turns root logins off"):
        controller(root)


def test_enrol_refuses_a_bad_fingerprint_before_any_connection(tmp_path: Path, cli) -> None:
    root = _init(tmp_path, cli)
    before = (root / "hosts.yml").read_bytes()
    code, _, err = cli("-i", str(root), "host", "enrol", "h1", "--address", "192.0.2.1",
                       "--fingerprint", "SHA256:nope")
    assert code == 2 and "not an OpenSSH SHA256 fingerprint" in err
    assert (root / "hosts.yml").read_bytes() == before
    assert not (root / "known_hosts").exists()


def test_enrol_of_a_host_that_does_not_answer_is_exit_4_nothing_written(
        tmp_path: Path, cli) -> None:
    root = _init(tmp_path, cli)
    before = (root / "hosts.yml").read_bytes()
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = cli("-i", str(root), "host", "enrol", "h1", "--address", "127.0.0.1",
                       "--port", str(port), "--fingerprint", "SHA256:" + "A" * 43)
    assert code == 4, err
    assert (root / "hosts.yml").read_bytes() == before
    assert not (root / "known_hosts").exists()


def test_enrol_help_says_how_much_headroom(cli) -> None:
    code, out, _ = cli("host", "enrol", "--help")
    assert code == 0
    assert "20% of its RAM" in " ".join(out.split())


# ---- init's questions --------------------------------------------------------------------

def test_init_without_a_terminal_names_each_missing_option() -> None:
    with pytest.raises(UsageError, match=r"missing --domain, --contact"):
        ask_missing({"--name": "N", "--domain": None, "--contact": None}, interactive=False)
    given = {"--name": "N", "--domain": "n.test", "--contact": "a@n.test"}
    assert ask_missing(given, interactive=False) == given


def test_init_at_a_terminal_asks_again_until_domain_and_contact_are_valid() -> None:
    @click.command()
    def ask() -> None:
        click.echo(ask_missing({"--name": "N", "--domain": None, "--contact": None}, True))

    result = CliRunner().invoke(ask, input="not a domain\nn.test\nbad\na@n.test\n")
    assert result.exit_code == 0, result.output
    assert "must be a fully qualified domain name" in result.output
    assert "must be an email address" in result.output
    assert "'--domain': 'n.test'" in result.output and "'--contact': 'a@n.test'" in result.output


def test_init_command_asks_at_a_terminal_and_writes_the_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from coophost.cli.main import cli as root_cli

    monkeypatch.setattr(options, "stdin_is_terminal", lambda: True)
    target = tmp_path / "asked"
    result = CliRunner().invoke(root_cli, ["init", str(target)],
                                input="Asked Co-op\nasked.test\nadmin@asked.test\n")
    assert result.exit_code == 0, result.output
    coop = (target / "coop.yml").read_text()
    assert "domain: asked.test" in coop and "admin@asked.test" in coop
    assert "host enrol" in result.output
