"""`coophost host enrol` against a freshly installed host: one extra container of the lab's base
image on the lab's network, reachable only with root's password (no coophost account), enrolled
into a co-op made by `coophost init`. The shared lab's inventory is never touched; the
container is removed at the end."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pty
import secrets
import select
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from coophost.lab.keys import ssh_keypair
from coophost.lab.lab import SYSTEMD_FLAGS, Lab, free_port, wait_for_boot, wait_for_ssh
from tests.integration.conftest import COOPHOST, LabInfo, coophost, record

pytestmark = pytest.mark.lab

PASSWORD_ENV = "COOPHOST_BOOTSTRAP_PASSWORD"


@dataclass
class FreshHost:
    """A container as a sysadmin leaves a new Debian install: root logs in with a password."""

    container: str
    port: int
    password: str
    host_key: str  # `ssh-ed25519 BASE64` of /etc/ssh/ssh_host_ed25519_key.pub

    def fingerprint(self) -> str:
        """What `ssh-keygen -lf` shows on the host's console."""
        proc = subprocess.run(["docker", "exec", self.container, "ssh-keygen", "-lf",
                               "/etc/ssh/ssh_host_ed25519_key.pub"],
                              capture_output=True, text=True, check=True)
        return proc.stdout.split()[1]

    def has_user(self, user: str) -> bool:
        """Whether `user` exists on the host."""
        return subprocess.run(["docker", "exec", self.container, "id", "-u", user],
                              capture_output=True, check=False).returncode == 0


def docker(*args: str, stdin: bytes | None = None) -> str:
    """Run docker; fail the test with its error output."""
    proc = subprocess.run(["docker", *args], input=stdin, capture_output=True, check=False)
    assert proc.returncode == 0, f"docker {args[0]}: {proc.stderr.decode()}"
    return proc.stdout.decode()


@contextlib.contextmanager
def fresh_container(lab: LabInfo, sshd: bytes, setup: list[tuple[list[str], bytes | None]]
                    ) -> Iterator[tuple[str, int, str]]:
    """A container of the lab's image on its network, as a new install: its own host key,
    `sshd` settings, no coophost account, then each `setup` command (argv, stdin) run in it.

    Yields (container, published ssh port, `type base64` host key); removed at the end.
    """
    the_lab = Lab(lab.name, lab.inventory)
    container = f"coophost-{lab.name}-enrol-{secrets.token_hex(3)}"
    port = free_port()
    key = ssh_keypair(f"root@{container}")
    # The lab's label: should this process die before removing it, `lab down` does.
    docker("create", "--name", container, "--label", f"coophost.lab={lab.name}",
           "--hostname", "fresh.enrol.test", "--network", the_lab.network,
           "-p", f"127.0.0.1:{port}:22", *SYSTEMD_FLAGS, the_lab.recipe.base_tag,
           "/lib/systemd/systemd")
    try:
        # The image's host keys are every lab container's: this host gets its own, as a new
        # install would; the image's coophost account is removed.
        for path, content in (
                ("/etc/ssh/ssh_host_ed25519_key", key.private),
                ("/etc/ssh/ssh_host_ed25519_key.pub", key.public.encode() + b"\n"),
                ("/etc/ssh/sshd_config.d/50-fresh-install.conf",
                 b"HostKey /etc/ssh/ssh_host_ed25519_key\n" + sshd)):
            docker("cp", "-", f"{container}:{path.rsplit('/', 1)[0]}", stdin=_tar(path, content))
        docker("start", container)
        wait_for_boot(container)
        docker("exec", container, "userdel", "--remove", "coophost")
        docker("exec", container, "rm", "-f", "/etc/sudoers.d/coophost")
        for argv, stdin in setup:
            docker("exec", "-i", container, *argv, stdin=stdin)
        docker("exec", container, "systemctl", "restart", "ssh")
        wait_for_ssh(port)
        on_host = docker("exec", container, "cat", "/etc/ssh/ssh_host_ed25519_key.pub")
        yield container, port, " ".join(on_host.split()[:2])
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", container], capture_output=True,
                       check=False)


@pytest.fixture(scope="module")
def fresh_host(lab: LabInfo) -> Iterator[FreshHost]:
    """A new install where only root logs in, with a password."""
    password = secrets.token_urlsafe(18)
    with fresh_container(lab, b"PermitRootLogin yes\nPasswordAuthentication yes\n",
                         [(["chpasswd"], f"root:{password}\n".encode())]) as made:
        container, port, host_key = made
        yield FreshHost(container, port, password, host_key)


def _tar(path: str, content: bytes) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(path.rsplit("/", 1)[1])
        info.size, info.mode = len(content), 0o600 if path.endswith("_key") else 0o644
        info.uid = info.gid = 0
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@pytest.fixture(scope="module")
def new_coop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A co-op made by `coophost init`, with no host yet."""
    root = tmp_path_factory.mktemp("enrol") / "coop"
    coophost("init", str(root), "--name", "Enrol Co-op", "--domain", "enrol.test",
             "--contact", "admin@enrol.test", check=True)
    return root


def files(coop: Path) -> dict[str, bytes | None]:
    """The bytes of hosts.yml and known_hosts (None: absent)."""
    return {name: (coop / name).read_bytes() if (coop / name).exists() else None
            for name in ("hosts.yml", "known_hosts")}


def other_fingerprint() -> str:
    """A well-formed fingerprint of some other key."""
    blob = base64.b64decode(ssh_keypair("other").public.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def enrol(coop: Path, host: FreshHost, *extra: str, password: str | None = None
          ) -> subprocess.CompletedProcess[str]:
    return coophost("-i", str(coop), "host", "enrol", "fresh", "--address", "127.0.0.1",
                    "--port", str(host.port), "--group", "mail", *extra,
                    env={PASSWORD_ENV: password if password is not None else host.password})


def enrol_at_terminal(coop: Path, port: int, answer: str, *extra: str,
                      env: dict[str, str] | None = None, password: str | None = None
                      ) -> subprocess.CompletedProcess[str]:
    """`host enrol` with a terminal as stdin, on which `answer` is typed, and `password` once
    the hidden prompt shows (it flushes what was typed before it, as a terminal does)."""
    main, tty = pty.openpty()
    args = ["-i", str(coop), "host", "enrol", "fresh", "--address", "127.0.0.1",
            "--port", str(port), "--group", "mail", *extra]
    try:
        os.write(main, answer.encode())
        # A session of its own: no controlling terminal, so a hidden prompt reads this one.
        with subprocess.Popen([*COOPHOST, *args], stdin=tty, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
                              start_new_session=True) as proc:
            err = b""
            assert proc.stderr is not None and proc.stdout is not None
            if password is not None:
                deadline = time.monotonic() + 120
                while b"password of" not in err and time.monotonic() < deadline:
                    if not select.select([proc.stderr], [], [], 1.0)[0]:
                        continue
                    chunk = os.read(proc.stderr.fileno(), 4096)
                    if not chunk:
                        break
                    err += chunk
                os.write(main, password.encode() + b"\n")
            out, rest = proc.communicate(timeout=300)
        text = out.decode(), (err + rest).decode()
        record(args, *text)
        return subprocess.CompletedProcess(args, proc.returncode, *text)
    finally:
        os.close(main)
        os.close(tty)


def root_password_works(host: FreshHost) -> bool:
    """Whether root still logs in with its password (the host key checked against the pin)."""
    client = paramiko.SSHClient()
    kind, blob = host.host_key.split()
    client.get_host_keys().add(f"[127.0.0.1]:{host.port}", kind,
                               paramiko.Ed25519Key(data=base64.b64decode(blob)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect("127.0.0.1", port=host.port, username="root", password=host.password,
                       allow_agent=False, look_for_keys=False, timeout=10)
        return True
    except paramiko.AuthenticationException:
        return False
    finally:
        client.close()


def test_enrol_pins_the_console_fingerprint_only_and_is_idempotent(
        fresh_host: FreshHost, new_coop: Path) -> None:
    started = time.monotonic()
    before = files(new_coop)
    assert before["known_hosts"] is None
    assert root_password_works(fresh_host)

    wrong = enrol(new_coop, fresh_host, "--fingerprint", other_fingerprint())
    assert wrong.returncode == 4, wrong.stderr
    assert "nothing written" in wrong.stderr
    assert files(new_coop) == before
    assert not fresh_host.has_user("coophost"), "a refused key got a login anyway"

    unasked = enrol(new_coop, fresh_host)  # no --fingerprint, stdin is no terminal
    assert unasked.returncode == 2, unasked.stderr
    assert fresh_host.fingerprint() in unasked.stderr
    assert files(new_coop) == before

    declined = enrol_at_terminal(new_coop, fresh_host.port, "n\n",
                                 env={PASSWORD_ENV: fresh_host.password})
    assert declined.returncode == 2, declined.stdout + declined.stderr
    assert fresh_host.fingerprint() in declined.stderr and "not confirmed" in declined.stderr
    assert files(new_coop) == before
    assert not fresh_host.has_user("coophost"), "a declined key got a login anyway"

    done = enrol(new_coop, fresh_host, "--fingerprint", fresh_host.fingerprint())
    assert done.returncode == 0, done.stdout + done.stderr
    assert fresh_host.password not in done.stdout + done.stderr
    pinned = (new_coop / "known_hosts").read_text().split("\n")
    assert f"[127.0.0.1]:{fresh_host.port} {fresh_host.host_key}" in pinned
    hosts = (new_coop / "hosts.yml").read_text()
    assert "fresh:" in hosts and "coophost_capacity: {ram_mb:" in hosts
    assert "`coophost host enrol`" in hosts, "the comments of hosts.yml were lost"
    check = coophost("-i", str(new_coop), "host", "check", "fresh")
    assert check.returncode == 0, check.stdout + check.stderr
    assert not root_password_works(fresh_host), "root's password still logs in"

    enrolled = files(new_coop)
    again = enrol(new_coop, fresh_host, "--fingerprint", fresh_host.fingerprint())
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing changed" in again.stdout
    assert files(new_coop) == enrolled
    as_json = enrol(new_coop, fresh_host, "--fingerprint", fresh_host.fingerprint(), "--json")
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    report = json.loads(as_json.stdout)
    assert (report["changed"], report["verdict"], report["account"]) == (
        False, "already pinned", "already working")
    assert report["preflight"]["ok"] is True
    assert files(new_coop) == enrolled
    print(f"enrol, refusals and re-enrol: {time.monotonic() - started:.1f} s")


def test_enrol_refuses_a_key_other_than_the_pinned_one(
        fresh_host: FreshHost, new_coop: Path) -> None:
    known_hosts = new_coop / "known_hosts"
    saved = known_hosts.read_bytes() if known_hosts.exists() else None
    other = " ".join(ssh_keypair("other").public.split()[:2])
    known_hosts.write_text(f"[127.0.0.1]:{fresh_host.port} {other}\n")
    try:
        before = files(new_coop)
        refused = enrol(new_coop, fresh_host, "--fingerprint", fresh_host.fingerprint())
        assert refused.returncode == 4, refused.stdout + refused.stderr
        assert "pins another key" in refused.stderr
        assert files(new_coop) == before
    finally:
        if saved is None:
            known_hosts.unlink()
        else:
            known_hosts.write_bytes(saved)


def test_enrol_with_a_sysadmins_key_and_a_typed_sudo_password_after_a_confirmation(
        lab: LabInfo, new_coop: Path, tmp_path: Path) -> None:
    """The other bootstrap: no root login, a sysadmin's account with a key and sudo, whose
    password is typed at the hidden prompt."""
    started = time.monotonic()
    sysadmin = ssh_keypair("sysadmin@laptop")
    identity = tmp_path / "id_sysadmin"
    identity.write_bytes(sysadmin.private)
    identity.chmod(0o600)
    password = secrets.token_urlsafe(18)
    setup: list[tuple[list[str], bytes | None]] = [
        (["useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", "ada"], None),
        (["chpasswd"], f"ada:{password}\n".encode()),
        (["install", "-d", "-m", "700", "-o", "ada", "-g", "ada", "/home/ada/.ssh"], None),
        (["sh", "-c", "cat > /home/ada/.ssh/authorized_keys && "
          "chown ada:ada /home/ada/.ssh/authorized_keys"], sysadmin.public.encode() + b"\n")]
    with fresh_container(lab, b"PermitRootLogin no\nPasswordAuthentication yes\n",
                         setup) as (container, port, host_key):
        fingerprint = subprocess.run(
            ["docker", "exec", container, "ssh-keygen", "-lf",
             "/etc/ssh/ssh_host_ed25519_key.pub"], capture_output=True, text=True,
            check=True).stdout.split()[1]
        coop = new_coop.parent / "coop-key"
        coophost("init", str(coop), "--name", "Key Co-op", "--domain", "key.test",
                 "--contact", "admin@key.test", check=True)
        # The key logs in; sudo wants ada's password, typed at the prompt (no env variable).
        done = enrol_at_terminal(coop, port, "y\n", "--user", "ada", "--identity",
                                 str(identity), password=password)
        assert done.returncode == 0, done.stdout + done.stderr
        assert fingerprint in done.stderr
        assert password not in done.stdout + done.stderr
        assert "password of ada on fresh" in done.stderr
        assert f"[127.0.0.1]:{port} {host_key}" in (coop / "known_hosts").read_text()
        check = coophost("-i", str(coop), "host", "check", "fresh")
        assert check.returncode == 0, check.stdout + check.stderr
        effective = docker("exec", container, "sshd", "-T")
        assert "passwordauthentication no" in effective.splitlines()
        assert "permitrootlogin no" in effective.splitlines()
    print(f"enrol with a sysadmin's key: {time.monotonic() - started:.1f} s")


def test_enrol_through_a_bastion_pins_both_and_every_login_comes_from_it(
        lab: LabInfo, tmp_path: Path) -> None:
    """A new host reachable only through a co-op host (ProxyJump in ~/.ssh/config): the
    bastion is checked against the co-op's known_hosts, the new host's key against the
    console's fingerprint, and the new host sees every connection come from the bastion."""
    from coophost.lab.mailcheck import lab_state
    from coophost.registry.hosts import load_hosts

    state = lab_state(Lab(lab.name, lab.inventory))
    bastion = next(h for h in state.hosts if h.name == "h1")
    key = next(e for e in load_hosts(lab.inventory) if e.name == "h1").key_file
    password = secrets.token_urlsafe(18)
    with fresh_container(lab, b"PermitRootLogin yes\nPasswordAuthentication yes\n",
                         [(["chpasswd"], f"root:{password}\n".encode())]) as made:
        container, _port, host_key = made
        inside = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}"
                        "{{end}}", container).strip()
        fingerprint = docker("exec", container, "ssh-keygen", "-lf",
                             "/etc/ssh/ssh_host_ed25519_key.pub").split()[1]
        config = tmp_path / "ssh_config"
        config.write_text(f"Host coop-bastion\n    HostName 127.0.0.1\n"
                          f"    Port {bastion.ssh_port}\n    User coophost\n"
                          f"    IdentityFile {key}\n\nHost {inside}\n"
                          f"    ProxyJump coop-bastion\n")
        coop = tmp_path / "coop"
        coophost("init", str(coop), "--name", "Jump Co-op", "--domain", "jump.test",
                 "--contact", "admin@jump.test", check=True)
        env = {"COOPHOST_SSH_CONFIG": str(config), PASSWORD_ENV: password}
        args = ["-i", str(coop), "host", "enrol", "fresh", "--address", inside,
                "--fingerprint", fingerprint, "--group", "mail"]
        # the bastion not pinned yet: refused before any login, nothing written
        refused = coophost(*args, env=env)
        assert refused.returncode == 4, refused.stdout + refused.stderr
        assert "jump host" in refused.stderr
        assert not (coop / "known_hosts").exists()
        # the bastion pinned (as enrolling it would have): the new host is enrolled through it
        kind, blob = bastion.host_key.split()[:2]
        (coop / "known_hosts").write_text(f"[127.0.0.1]:{bastion.ssh_port} {kind} {blob}\n")
        since = time.time() - 1
        done = coophost(*args, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{inside} {host_key}" in (coop / "known_hosts").read_text().splitlines()
        check = coophost("-i", str(coop), "host", "check", "fresh", env=env)
        assert check.returncode == 0, check.stdout + check.stderr
        logins = [line for line in docker(
            "exec", container, "journalctl", "-u", "ssh", "--since", f"@{int(since)}",
            "--no-pager", "-o", "cat").splitlines() if line.startswith("Accepted ")]
        assert logins and all(f" from {bastion.ip} " in line for line in logins), logins
