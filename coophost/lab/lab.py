"""A local lab co-op: systemd Debian hosts in Docker, a lab DNS server and a lab ACME CA.

Every Docker object a lab makes carries the label `coophost.lab=<name>`, so `down` removes
exactly what `up` made, and labs of different names never touch each other. The controller
reaches hosts only through sshd ports published on 127.0.0.1; host keys are made here and
pinned in the inventory's known_hosts before a host first boots, so nothing is trusted on
first use.
"""

from __future__ import annotations

import io
import json
import re
import socket
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from coophost.backup.model import BACKUP_GROUP
from coophost.dns.serve import DNS_GROUP
from coophost.errors import ExternalCommandError, UsageError
from coophost.fsutil import atomic_write
from coophost.lab import docker, image
from coophost.lab.keys import CertKey, lab_ca, server_cert, ssh_keypair
from coophost.layout import HOSTS_FILE, KNOWN_HOSTS_FILE, STATE_DIR, STATE_FILE
from coophost.registry.model import ARTIFACTS_GROUP
from coophost.registry.workers import (
    CAPACITY_VAR,
    RECEPTOR_PORT_VAR,
    SERVES_VAR,
    TRANSPORT_VAR,
    WORKERS_GROUP,
)
from coophost.state import StateDB

LABEL = "coophost.lab"
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,20}$")
DEFAULT_CAPACITY = {"ram_mb": 4096, "disk_gb": 40}
MARKER = "# Written by `coophost lab up`: this lab's hosts, ports and keys. Regenerated on up."
ACME_PORT = 14000


def lab_dns_host(hosts: list[LabHost]) -> str:
    """The lab host in group dns: h2, or h1 in a one-host lab."""
    names = [h.name for h in hosts if is_service_host(h.name)]
    return "h2" if "h2" in names else names[0]


def service_groups() -> dict[str, int | None]:
    """The host groups of the catalogue's services, each with how many lab hosts it gets.

    That is the service's hooks' `lab_hosts` (None: every service host; the most of them when
    services share a group).
    """
    from coophost.registry.catalogue import load_catalogue
    from coophost.services import hooks_for

    wanted: dict[str, list[int | None]] = {}
    for service in load_catalogue().services.values():
        wanted.setdefault(service.group, []).append(hooks_for(service).lab_hosts)
    return {group: None if None in counts else max(c for c in counts if c is not None)
            for group, counts in sorted(wanted.items())}


def group_hosts(count: int | None, hosts: list[LabHost]) -> list[str]:
    """The lab's service hosts in a service group of `count` hosts.

    The first ones; all of them when `count` is None.
    """
    names = [h.name for h in hosts if is_service_host(h.name)]
    return names if count is None else names[:count]
ACME_MGMT_PORT = 15000
SYSTEMD_FLAGS = (
    "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--cgroupns=host",
    "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",  # noqa: S108 - in the host
)
# A receptor worker shares the controller's network namespace: systemd without NET_ADMIN, so
# nothing in it can change the controller's network.
WORKER_SYSTEMD_FLAGS = tuple(f for i, f in enumerate(SYSTEMD_FLAGS) if i not in (2, 3))
WORKER_TRANSPORTS = ("ssh", "receptor")


@dataclass
class LabHost:
    """One lab host as the controller sees it."""

    name: str
    container: str
    fqdn: str
    ssh_port: int
    ip: str = ""
    host_key: str = ""
    state: str = "missing"
    # A worker's: how jobs reach it (ssh, or receptor: a systemd container running Debian's
    # receptor, its TLS listener on 127.0.0.1:receptor_port).
    transport: str = "ssh"
    receptor_port: int = 0


@dataclass
class LabState:
    """What `lab up` made, saved beside the inventory so `status` and `down` need no guessing."""

    name: str
    network: str
    domain: str
    hosts: list[LabHost] = field(default_factory=list)
    dns_ip: str = ""
    dns_port: int = 0
    acme_ip: str = ""
    acme_port: int = 0
    acme_mgmt_port: int = 0
    gateway: str = ""  # the controller's address on the lab network
    control_port: int = 0  # the control host's sshd (member shell) on 127.0.0.1
    control_key: str = ""

    def to_json(self) -> str:
        """Serialise for the state file."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LabState:
        """Read back a state file."""
        data = json.loads(text)
        data["hosts"] = [LabHost(**h) for h in data.get("hosts", [])]
        return cls(**data)


def is_service_host(name: str) -> bool:
    """Whether a lab host name is a service host's (h1, h2, ...)."""
    return name[:1] == "h" and name[1:].isdigit()


def is_worker_host(name: str) -> bool:
    """Whether a lab host name is a worker's (w1, ...): an execution node, no service host."""
    return name[:1] == "w" and name[1:].isdigit()


def is_backup_host(name: str) -> bool:
    """Whether a lab host name is a backup host's (b1, ...)."""
    return name[:1] == "b" and name[1:].isdigit()


def check_name(name: str) -> str:
    """Refuse lab names that would not make safe Docker object and DNS names."""
    if not NAME_RE.match(name):
        raise UsageError(f"lab name {name!r} is not allowed: use a-z, 0-9 and '-', "
                         "starting with a letter, at most 21 characters")
    return name


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tar(files: dict[str, tuple[bytes, int, int]]) -> bytes:
    """A tar stream of {path: (content, mode, uid)} for `docker cp -`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        made: set[str] = set()
        for path, (content, mode, uid) in sorted(files.items()):
            parts = path.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                folder = "/".join(parts[:depth])
                if folder not in made:
                    made.add(folder)
                    info = tarfile.TarInfo(folder)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o700 if folder.endswith(".ssh") else 0o755
                    info.uid = info.gid = uid if folder.startswith("home/") else 0
                    tar.addfile(info)
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.uid, info.gid = len(content), mode, uid, uid
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def saved_state(inventory: Path) -> LabState | None:
    """The record `lab up` saved beside `inventory`, if a lab was brought up from it."""
    path = inventory / ".coophost" / "lab" / "lab.json"
    return LabState.from_json(path.read_text()) if path.is_file() else None


class Lab:
    """A named lab and the inventory folder it writes."""

    def __init__(self, name: str, inventory: Path) -> None:
        self.name = check_name(name)
        self.inventory = inventory
        self.domain = f"{name}.test"
        self.network = f"coophost-{name}"
        self.workdir = inventory / ".coophost" / "lab"
        self.recipe = image.Recipe()

    # -- paths -------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        """Where the lab's own record lives (read by `saved_state`)."""
        return self.workdir / "lab.json"

    @property
    def key_file(self) -> Path:
        """The lab's SSH client key (the `coophost` admin account on every host)."""
        return self.workdir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        """The inventory's pinned host keys."""
        return self.inventory / KNOWN_HOSTS_FILE

    def container(self, role: str) -> str:
        """The Docker name of a lab container (`h1`, `dns`, `acme`)."""
        return f"coophost-{self.name}-{role}"

    def load_state(self) -> LabState | None:
        """The saved lab record, if the lab was brought up from this inventory."""
        return saved_state(self.inventory)

    # -- up ----------------------------------------------------------------------------------
    def up(self, hosts: int | None, mirror: str | None = None,
           progress: Any = None, backup_hosts: int | None = None,
           workers: int | None = None, worker_transport: str | None = None) -> LabState:
        """Bring the lab to `hosts` service hosts, `backup_hosts` backup hosts and `workers`.

        None keeps the current counts (3 service hosts, 1 backup host, no worker for a new
        lab). Service hosts are h1..hN, in every service group; backup hosts b1..bM, in
        `backup`; workers w1..wK, in `coophost_workers`, each serving every other host.
        `worker_transport` (ssh or receptor; None keeps the workers' current one, ssh for
        new workers): a worker whose transport changes is made anew.
        """
        say = progress or (lambda _msg: None)
        docker.require_engine()
        previous = self.load_state()
        before = [h.name for h in previous.hosts] if previous else []
        count = hosts if hosts is not None else (
            sum(is_service_host(n) for n in before) if previous else 3)
        backups = backup_hosts if backup_hosts is not None else (
            sum(is_backup_host(n) for n in before) if previous else 1)
        if not 1 <= count <= 20:
            raise UsageError(f"--hosts {count}: a lab has between 1 and 20 hosts")
        if not 0 <= backups <= 3:
            raise UsageError(f"--backup-hosts {backups}: a lab has between 0 and 3 backup hosts")
        worker_count = workers if workers is not None else sum(map(is_worker_host, before))
        if not 0 <= worker_count <= 5:
            raise UsageError(f"--workers {worker_count}: a lab has between 0 and 5 workers")
        if worker_transport is not None and worker_transport not in WORKER_TRANSPORTS:
            raise UsageError(f"--worker-transport {worker_transport}: choose one of "
                             f"{', '.join(WORKER_TRANSPORTS)}")
        say("image: checking the cached base image")
        base, services, built = image.ensure_images(self.recipe, mirror)
        say(f"image: {'built' if built else 'cached'} {base}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        client_key = self._client_key()
        ca = self._ca()
        self._ensure_network()
        state = LabState(self.name, self.network, self.domain, gateway=self._gateway())
        self._ensure_dns(services, state)
        self._ensure_acme(services, ca, state)
        names = [f"h{i}" for i in range(1, count + 1)] + [f"b{i}" for i in range(1, backups + 1)]
        for name in names:
            host = LabHost(name, self.container(name), f"{name}.{self.domain}",
                           self._published(self.container(name), "22/tcp") or free_port())
            self._ensure_host(base, host, client_key, ca, state.dns_ip)
            state.hosts.append(host)
            say(f"host {name}: {host.state} on 127.0.0.1:{host.ssh_port}")
        for index in range(1, worker_count + 1):
            name = f"w{index}"
            old = next((h for h in previous.hosts if h.name == name), None) if previous else None
            transport = worker_transport or (old.transport if old else "ssh")
            host = LabHost(name, self.container(name), f"{name}.{self.domain}",
                           old.ssh_port if old else free_port(), transport=transport,
                           receptor_port=(old.receptor_port if old and old.receptor_port
                                          else free_port()) if transport == "receptor" else 0)
            if old is not None and old.transport != transport:
                docker.docker("rm", "-f", host.container, check=False)  # another kind now
            self._ensure_worker(base, host, client_key)
            state.hosts.append(host)
            say(f"worker {name}: {host.state} on 127.0.0.1:{host.ssh_port}")
        self._ensure_control(base, state, previous)
        say(f"control host: member shell on 127.0.0.1:{state.control_port}")
        removed = self._remove_extra_hosts(count, backups, worker_count)
        self._forget_applied([h.name for h in state.hosts if h.state == "created"] + removed)
        self._write_dns_hosts(state)
        self._write_inventory(state)
        atomic_write(self.state_file, state.to_json())
        for port in [h.ssh_port for h in state.hosts] + [state.control_port]:
            wait_for_ssh(port)
        say(f"{count} hosts and {backups} backup hosts up; inventory "
            f"{self.inventory / HOSTS_FILE}")
        return state

    def _forget_applied(self, hosts: list[str]) -> None:
        """Drop the applied record of hosts this lab made anew or removed.

        A new container is a new machine: whatever the co-op's state.db says was applied to a
        host of that name before (a lab brought down and up again) is not on it.
        """
        if not hosts or not (self.inventory / STATE_DIR / STATE_FILE).is_file():
            return
        with StateDB(self.inventory) as db:
            for name in hosts:
                db.forget_host(name)

    def _client_key(self) -> str:
        pub = self.key_file.with_suffix(".pub")
        if not (self.key_file.is_file() and pub.is_file()):
            pair = ssh_keypair(f"coophost-lab-{self.name}")
            atomic_write(self.key_file, pair.private, mode=0o600)
            atomic_write(pub, pair.public + "\n")
        return pub.read_text().strip()

    def _ca(self) -> CertKey:
        cert, key = self.workdir / "ca.pem", self.workdir / "ca.key"
        if not (cert.is_file() and key.is_file()):
            made = lab_ca(self.name)
            atomic_write(key, made.key, mode=0o600)
            atomic_write(cert, made.cert)
        return CertKey(cert.read_bytes(), key.read_bytes())

    def _gateway(self) -> str:
        found = docker.inspect("network", [self.network])
        configs = (found[0].get("IPAM") or {}).get("Config") or [] if found else []
        return next((c["Gateway"] for c in configs if c.get("Gateway")), "")

    def _ensure_network(self) -> None:
        if not docker.inspect("network", [self.network]):
            docker.docker("network", "create", "--label", f"{LABEL}={self.name}",
                          self.network)

    def _running(self, container: str, tag: str) -> str:
        """'running', 'stopped', 'stale' (wrong image) or 'missing'."""
        found = docker.inspect("container", [container])
        if not found:
            return "missing"
        if found[0]["Config"]["Image"] != tag:
            return "stale"
        return "running" if found[0]["State"]["Running"] else "stopped"

    def _ip(self, container: str) -> str:
        found = docker.inspect("container", [container])
        nets = found[0]["NetworkSettings"]["Networks"] if found else {}
        return str(nets.get(self.network, {}).get("IPAddress", ""))

    def _address_when_up(self, container: str, timeout: float = 60.0) -> str:
        """The container's lab address once it runs and has one; else a clear error.

        A service container that exits at start (a bad option, a port in use) is restarted
        by Docker with a growing delay and has no address meanwhile: say why, from its log.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = docker.inspect("container", [container])
            info = found[0] if found else {}
            nets = info.get("NetworkSettings", {}).get("Networks") or {}
            address = str(nets.get(self.network, {}).get("IPAddress", ""))
            if info.get("State", {}).get("Running") and address:
                return address
            if time.monotonic() > deadline:
                log = docker.docker("logs", "--tail", "15", container, check=False)
                tail = (log.stdout + log.stderr).decode(errors="replace").strip()
                state = info.get("State", {})
                raise ExternalCommandError(
                    f"lab {self.name}: {container} is not running with an address after "
                    f"{timeout:.0f} s (state {state.get('Status', 'missing')}, exit code "
                    f"{state.get('ExitCode', '?')}); its last output:\n{tail or '(none)'}",
                    hint=f"run `coophost lab up --name {self.name}` to repair the lab")
            time.sleep(0.5)

    def _start_or_keep(self, container: str, tag: str) -> str:
        status = self._running(container, tag)
        if status == "stale":
            docker.docker("rm", "-f", container)
            return "missing"
        if status == "stopped":
            docker.docker("start", container)
            return "started"
        return status

    def _ensure_dns(self, tag: str, state: LabState) -> None:
        container = self.container("dns")
        dns_dir = self.workdir / "dns"
        dns_dir.mkdir(parents=True, exist_ok=True)
        conf = dns_dir / "dnsmasq.conf"
        atomic_write(conf, self._dnsmasq_conf())
        if not (dns_dir / "hosts").exists():
            atomic_write(dns_dir / "hosts", "")
        if not (dns_dir / "records.conf").exists():
            atomic_write(dns_dir / "records.conf", "")
        port = self._published(container, "53/udp") or free_port()
        if self._start_or_keep(container, tag) == "missing":
            docker.docker(
                "run", "-d", "--name", container, "--label", f"{LABEL}={self.name}",
                "--network", self.network, "--network-alias", f"dns.{self.domain}",
                "--hostname", f"dns.{self.domain}", "--restart", "unless-stopped",
                "-p", f"127.0.0.1:{port}:53/udp", "-p", f"127.0.0.1:{port}:53/tcp",
                "-v", f"{dns_dir.resolve()}:/etc/coophost-dns:ro",
                tag, "dnsmasq", "--keep-in-foreground", "--log-facility=-",
                "--conf-file=/etc/coophost-dns/dnsmasq.conf")
        state.dns_ip, state.dns_port = self._address_when_up(container), port

    def _dnsmasq_conf(self) -> str:
        return "\n".join([
            "# The lab's DNS. Names under .test are answered here and never forwarded;",
            "# other names go to Docker's resolver (hosts need the Debian mirror for apt).",
            "user=root",
            "except-interface=lo",
            "bind-dynamic",
            "domain-needed",
            "bogus-priv",
            "no-hosts",
            "local=/test/",
            "addn-hosts=/etc/coophost-dns/hosts",
            "conf-file=/etc/coophost-dns/records.conf",
            "",
        ])

    def _ensure_acme(self, tag: str, ca: CertKey, state: LabState) -> None:
        container = self.container("acme")
        acme_dir = self.workdir / "acme"
        fqdn = f"acme.{self.domain}"
        if not (acme_dir / "cert.pem").is_file():
            served = server_cert(ca, [fqdn, "localhost"], ["127.0.0.1"])
            atomic_write(acme_dir / "key.pem", served.key, mode=0o600)  # pebble runs as root
            atomic_write(acme_dir / "cert.pem", served.cert)
        (acme_dir / "key.pem").chmod(0o600)  # labs made before it was written 0600
        config = {"pebble": {
            "listenAddress": f"0.0.0.0:{ACME_PORT}",
            "managementListenAddress": f"0.0.0.0:{ACME_MGMT_PORT}",
            "certificate": "/etc/pebble/cert.pem", "privateKey": "/etc/pebble/key.pem",
            "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }}
        atomic_write(acme_dir / "pebble.json", json.dumps(config, indent=2) + "\n")
        port = self._published(container, f"{ACME_PORT}/tcp") or free_port()
        mgmt = self._published(container, f"{ACME_MGMT_PORT}/tcp") or free_port()
        if self._start_or_keep(container, tag) == "missing":
            docker.docker(
                "run", "-d", "--name", container, "--label", f"{LABEL}={self.name}",
                "--network", self.network, "--network-alias", fqdn, "--hostname", fqdn,
                "--restart", "unless-stopped",
                "-e", "PEBBLE_VA_NOSLEEP=1", "-e", "PEBBLE_WFE_NONCEREJECT=0",
                "-p", f"127.0.0.1:{port}:{ACME_PORT}", "-p", f"127.0.0.1:{mgmt}:{ACME_MGMT_PORT}",
                "-v", f"{acme_dir.resolve()}:/etc/pebble:ro",
                tag, "pebble", "-config", "/etc/pebble/pebble.json",
                "-dnsserver", f"{state.dns_ip}:53")
        state.acme_ip, state.acme_port, state.acme_mgmt_port = (
            self._address_when_up(container), port, mgmt)

    def _ensure_host(self, tag: str, host: LabHost, client_key: str, ca: CertKey,
                     dns_ip: str) -> None:
        status = self._start_or_keep(host.container, tag)
        if status == "missing":
            try:
                self._create_host(tag, host, client_key, ca, dns_ip)
            except BaseException:
                # A half-made host would be kept by the next `up`: remove it instead.
                docker.docker("rm", "-f", host.container, check=False)
                raise
            status = "created"
        host.state = status
        host.ip = self._ip(host.container)
        pub = docker.docker("exec", host.container, "cat", "/etc/ssh/ssh_host_ed25519_key.pub")
        host.host_key = " ".join(pub.stdout.decode().split()[:2])

    def _create_host(self, tag: str, host: LabHost, client_key: str, ca: CertKey,
                     dns_ip: str) -> None:
        docker.docker(
            "create", "--name", host.container, "--label", f"{LABEL}={self.name}",
            "--label", f"coophost.host={host.name}", "--hostname", host.fqdn,
            "--network", self.network, "--network-alias", host.fqdn,
            "--dns", dns_ip, "--restart", "unless-stopped",
            "-p", f"127.0.0.1:{host.ssh_port}:22", *SYSTEMD_FLAGS, tag,
            "/lib/systemd/systemd")
        host_key = ssh_keypair(f"root@{host.fqdn}")
        uid = 1000  # the lab user's uid, fixed by the image recipe
        docker.docker("cp", "-a", "-", f"{host.container}:/", input_bytes=_tar({
            "etc/ssh/ssh_host_ed25519_key": (host_key.private, 0o600, 0),
            "etc/ssh/ssh_host_ed25519_key.pub": (host_key.public.encode() + b"\n", 0o644, 0),
            "etc/ssh/sshd_config.d/coophost-lab.conf": (
                b"HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\n"
                b"PermitRootLogin no\n", 0o644, 0),
            f"home/{self.recipe.user}/.ssh/authorized_keys": (
                client_key.encode() + b"\n", 0o600, uid),
            f"usr/local/share/ca-certificates/coophost-lab-{self.name}.crt": (ca.cert, 0o644, 0),
        }))
        docker.docker("start", host.container)
        wait_for_boot(host.container)
        docker.docker("exec", host.container, "update-ca-certificates", "--fresh")

    def _ensure_worker(self, tag: str, host: LabHost, client_key: str) -> None:
        """A lab execution node in the controller's network: sshd alone, or systemd.

        It shares the controller's network namespace (as the control host does), so it reaches
        the lab hosts at the very addresses and pinned keys of hosts.yml; its sshd listens on
        127.0.0.1 only. A receptor worker runs systemd without NET_ADMIN (the role installs
        receptor as a service): the image's sshd gets its port and address from a drop-in
        (Debian's sshd_config reads sshd_config.d first and names no port of its own), so
        nothing listens on port 22 or on another address of the controller, and receptor's
        TLS listener is bound to 127.0.0.1 by hosts.yml (`worker_receptor_bind_address`).
        `coophost workers setup` then installs it (roles/worker).
        """
        folder = self.workdir / "workers" / host.name
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_file = folder / "ssh_host_ed25519_key"
        if not key_file.is_file():
            pair = ssh_keypair(f"root@{host.fqdn}")
            atomic_write(key_file, pair.private, mode=0o600)
            atomic_write(key_file.with_suffix(".pub"), pair.public + "\n")
        status = self._start_or_keep(host.container, tag)
        if status == "missing":
            systemd = host.transport == "receptor"
            sshd = [f"Port {host.ssh_port}", "ListenAddress 127.0.0.1",
                    "HostKey /etc/ssh/ssh_host_ed25519_key", "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no", "PermitRootLogin no"]
            if systemd:
                config_path = "etc/ssh/sshd_config.d/coophost-lab.conf"
                run: tuple[str, ...] = (*WORKER_SYSTEMD_FLAGS, tag, "/lib/systemd/systemd")
            else:
                sshd = ["Include /etc/ssh/sshd_config.d/*.conf", *sshd, "UsePAM yes",
                        "PidFile /run/sshd-worker.pid",
                        "Subsystem sftp /usr/lib/openssh/sftp-server"]
                config_path = "etc/ssh/sshd_worker_config"
                run = ("--tmpfs", "/run", "--tmpfs", "/tmp", tag, "/bin/sh", "-c",  # noqa: S108
                       "mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -f /" + config_path)
            uid = 1000  # the lab user's uid, fixed by the image recipe
            docker.docker(
                "create", "--name", host.container, "--label", f"{LABEL}={self.name}",
                "--label", f"coophost.host={host.name}", "--network", "host",
                "--restart", "unless-stopped", *run)
            try:
                docker.docker("cp", "-a", "-", f"{host.container}:/", input_bytes=_tar({
                    "etc/ssh/ssh_host_ed25519_key": (key_file.read_bytes(), 0o600, 0),
                    config_path: ("\n".join([*sshd, ""]).encode(), 0o644, 0),
                    f"home/{self.recipe.user}/.ssh/authorized_keys": (
                        client_key.encode() + b"\n", 0o600, uid),
                }))
                docker.docker("start", host.container)
                if systemd:
                    wait_for_boot(host.container)
            except BaseException:
                docker.docker("rm", "-f", host.container, check=False)
                raise
            status = "created"
        host.state = status
        host.host_key = " ".join(key_file.with_suffix(".pub").read_text().split()[:2])

    @property
    def control_dir(self) -> Path:
        """The control host's sshd files (config, host key, authorized_keys)."""
        return self.workdir / "control"

    @property
    def control_authorized_keys(self) -> Path:
        """The file `coophost members authorize --file` writes for the lab's control host."""
        return self.control_dir / "authorized_keys"

    def _ensure_control(self, tag: str, state: LabState, previous: LabState | None) -> None:
        """The co-op's control host, where members' keys reach the member shell.

        It runs this very coophost: the controller's checkout and Python are mounted
        read-only at the same paths, the co-op directory read-write, and it shares the
        controller's network namespace so it reaches the hosts as the controller does. Its
        sshd listens on 127.0.0.1 only, takes keys from the authorized_keys file that
        `coophost members authorize` writes, and lets root in only through the forced command
        of a key (PermitRootLogin forced-commands-only): no password, pty or forwarding.
        """
        import sys

        import coophost

        container = self.container("control")
        folder = self.control_dir
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_file = folder / "ssh_host_ed25519_key"
        if not key_file.is_file():
            pair = ssh_keypair(f"root@control.{self.domain}")
            atomic_write(key_file, pair.private, mode=0o600)
            atomic_write(key_file.with_suffix(".pub"), pair.public + "\n")
        if not self.control_authorized_keys.is_file():
            atomic_write(self.control_authorized_keys, "", mode=0o600)
        port = (previous.control_port if previous and previous.control_port else free_port())
        atomic_write(folder / "sshd_config", "\n".join([
            "# The lab control host's sshd: members' keys reach the member shell, nothing else.",
            f"Port {port}", "ListenAddress 127.0.0.1",
            "HostKey /etc/coophost-control/ssh_host_ed25519_key",
            "AuthorizedKeysFile /etc/coophost-control/authorized_keys",
            "PermitRootLogin forced-commands-only", "AllowUsers root",
            "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "PermitTTY no",
            "AllowTcpForwarding no", "AllowAgentForwarding no", "AllowStreamLocalForwarding no",
            "X11Forwarding no", "PermitTunnel no", "PermitUserEnvironment no",
            "DisableForwarding yes", "StrictModes yes", "PidFile /run/sshd-control.pid", ""]))
        mounts = {Path(coophost.__file__).resolve().parents[1], Path(sys.prefix).resolve()}
        base = Path(sys.base_prefix).resolve()
        if not str(base).startswith("/usr"):  # a Debian Python is the image's own
            mounts.add(base)
        if self._start_or_keep(container, tag) == "missing":
            volumes = [arg for path in sorted(mounts) for arg in ("-v", f"{path}:{path}:ro")]
            inventory = self.inventory.resolve()
            docker.docker(
                "run", "-d", "--name", container, "--label", f"{LABEL}={self.name}",
                "--label", "coophost.host=control", "--network", "host",
                "--restart", "unless-stopped", *volumes,
                "-v", f"{inventory}:{inventory}",
                "-v", f"{folder.resolve()}:/etc/coophost-control:ro",
                tag, "/bin/sh", "-c",
                "mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e "
                "-f /etc/coophost-control/sshd_config")
        state.control_port = port
        state.control_key = " ".join(key_file.with_suffix(".pub").read_text().split()[:2])

    def _published(self, container: str, port: str) -> int:
        """The 127.0.0.1 port a container publishes for `port` (0 when none)."""
        found = docker.inspect("container", [container])
        bindings = (found[0]["HostConfig"].get("PortBindings") or {}) if found else {}
        for binding in bindings.get(port) or []:
            if binding.get("HostPort"):
                return int(binding["HostPort"])
        return 0

    def _remove_extra_hosts(self, count: int, backups: int, workers: int = 0) -> list[str]:
        removed = []
        for cid in docker.ids_by_label("container", f"{LABEL}={self.name}"):
            found = docker.inspect("container", [cid])
            label = found[0]["Config"]["Labels"].get("coophost.host", "") if found else ""
            limit = (count if is_service_host(label) else backups if is_backup_host(label)
                     else workers if is_worker_host(label) else 0)
            numbered = is_service_host(label) or is_backup_host(label) or is_worker_host(label)
            if numbered and int(label[1:]) > limit:
                docker.docker("rm", "-f", cid)
                removed.append(label)
        return removed

    def _write_dns_hosts(self, state: LabState) -> None:
        lines = [f"{state.dns_ip} dns.{self.domain}", f"{state.acme_ip} acme.{self.domain}"]
        lines += [f"{h.ip} {h.fqdn} {h.name}" for h in state.hosts if h.ip]
        atomic_write(self.workdir / "dns" / "hosts", "\n".join(lines) + "\n")
        # dnsmasq rereads addn-hosts on SIGHUP; no restart, no lost queries.
        docker.docker("kill", "--signal", "HUP", self.container("dns"))

    def _write_inventory(self, state: LabState) -> None:
        self.inventory.mkdir(parents=True, exist_ok=True)
        known = self.known_hosts.resolve()
        key = self.key_file.resolve()
        inventory: dict[str, Any] = {"all": {
            "vars": {
                "ansible_user": self.recipe.user,
                "ansible_become": True,
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_ssh_private_key_file": str(key),
                "ansible_ssh_common_args": (
                    f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes "
                    "-o IdentitiesOnly=yes"),
                "coophost_lab": self.name,
                "coophost_lab_domain": self.domain,
                "coophost_lab_dns": state.dns_ip,
                "coophost_acme_directory": f"https://acme.{self.domain}:{ACME_PORT}/dir",
                # The controller is the lab's management address (as a co-op's admin network
                # would be): fail2ban never bans it, or the tests' refused probes would lock
                # the controller out of mail ports. Lab hosts attacking each other are banned.
                "common_fail2ban_ignoreip": ["127.0.0.1/8", "::1",
                                             *([f"{state.gateway}/32"] if state.gateway else [])],
            },
            "hosts": {h.name: {
                "ansible_host": "127.0.0.1", "ansible_port": h.ssh_port,
                "coophost_fqdn": h.fqdn, "coophost_lab_ip": h.ip,
                "coophost_capacity": dict(DEFAULT_CAPACITY),
            } for h in state.hosts if not is_worker_host(h.name)},
            "children": {
                **{g: {"hosts": dict.fromkeys(group_hosts(count, state.hosts))}
                   for g, count in service_groups().items()},
                # The co-op's authoritative DNS (roles/dns) beside the lab's dnsmasq, which
                # every host still resolves through: h2 (h1 in a one-host lab).
                DNS_GROUP: {"hosts": {lab_dns_host(state.hosts): None}},
                # The co-op's artifact mirror (roles/artifacts): the first service host.
                ARTIFACTS_GROUP: {"hosts": {next(h.name for h in state.hosts
                                              if is_service_host(h.name)): None}},
                **({BACKUP_GROUP: {"hosts": {h.name: None for h in state.hosts
                                             if is_backup_host(h.name)}}}
                   if any(is_backup_host(h.name) for h in state.hosts) else {}),
                # Execution nodes (coophost.registry.workers): each serves every other host.
                **({WORKERS_GROUP: {"hosts": {h.name: {
                    "ansible_host": "127.0.0.1", "ansible_port": h.ssh_port,
                    SERVES_VAR: [o.name for o in state.hosts if not is_worker_host(o.name)],
                    CAPACITY_VAR: 2,
                    **({TRANSPORT_VAR: "receptor", RECEPTOR_PORT_VAR: h.receptor_port,
                        # the controller's network: the TLS listener on 127.0.0.1 only
                        "worker_receptor_bind_address": "127.0.0.1"}
                       if h.transport == "receptor" else {}),
                } for h in state.hosts if is_worker_host(h.name)}}}
                   if any(is_worker_host(h.name) for h in state.hosts) else {}),
            },
        }}
        atomic_write(self.inventory / HOSTS_FILE, MARKER + "\n" + _yaml_dump(inventory))
        pinned = [f"[127.0.0.1]:{h.ssh_port} {h.host_key}" for h in state.hosts]
        if state.control_port:
            pinned.append(f"[127.0.0.1]:{state.control_port} {state.control_key}")
        atomic_write(self.known_hosts, MARKER + "\n" + "\n".join(pinned) + "\n")

    # -- DNS records --------------------------------------------------------------------------
    def sync_records(self, config: str) -> bool:
        """Serve `config` (dnsmasq options) from the lab DNS; return whether it changed.

        dnsmasq reads extra records only at start, so a change restarts the DNS container
        (about a second); its address must not move, since every host resolves through it.
        """
        docker.require_engine()
        state = self.load_state()
        if state is None:
            raise UsageError(f"lab {self.name}: not up here (run `coophost lab up`)")
        target = self.workdir / "dns" / "records.conf"
        if target.is_file() and target.read_text() == config:
            return False
        atomic_write(target, config)
        container = self.container("dns")
        docker.docker("restart", "--time", "2", container)
        address = self._address_when_up(container)
        if address != state.dns_ip:
            raise ExternalCommandError(
                f"lab {self.name}: the DNS container came back on {address}, not "
                f"{state.dns_ip}; run `coophost lab up --name {self.name}` to repair the lab")
        return True

    def served_names(self) -> list[str]:
        """The names the lab's hosts file answers (its hosts, DNS and ACME)."""
        hosts = self.workdir / "dns" / "hosts"
        if not hosts.is_file():
            return []
        return [name for line in hosts.read_text().splitlines() for name in line.split()[1:]]

    # -- status, down ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What Docker reports of this lab's containers, with the saved ports."""
        docker.require_engine()
        state = self.load_state()
        rows = []
        for cid in docker.ids_by_label("container", f"{LABEL}={self.name}"):
            found = docker.inspect("container", [cid])
            if not found:
                continue
            info = found[0]
            rows.append({
                "container": info["Name"].lstrip("/"),
                "role": info["Config"]["Labels"].get("coophost.host")
                or info["Name"].rsplit("-", 1)[-1],
                "state": info["State"]["Status"],
                "ip": info["NetworkSettings"]["Networks"].get(self.network, {})
                .get("IPAddress", ""),
            })
        ports = {h.name: h.ssh_port for h in state.hosts} if state else {}
        if state and state.control_port:
            ports["control"] = state.control_port
        for row in rows:
            if row["role"] in ports:
                row["ssh"] = f"127.0.0.1:{ports[row['role']]}"
        return {"name": self.name, "inventory": str(self.inventory), "network": self.network,
                "containers": sorted(rows, key=lambda r: r["container"]),
                "image": self.recipe.base_tag}

    def down(self) -> dict[str, int]:
        """Remove every container, network and volume of this lab, and the files up wrote."""
        docker.require_engine()
        label = f"{LABEL}={self.name}"
        previous = self.load_state()
        if previous is not None:  # its machines are gone, and what was applied to them
            self._forget_applied([h.name for h in previous.hosts])
        removed = {"containers": 0, "networks": 0, "volumes": 0}
        containers = docker.ids_by_label("container", label)
        if containers:
            docker.docker("rm", "-f", "-v", *containers)
        removed["containers"] = len(containers)
        for kind in ("network", "volume"):
            names = docker.ids_by_label(kind, label)
            if names:
                docker.docker(kind, "rm", *names)
            removed[kind + "s"] = len(names)
        for path in (self.inventory / HOSTS_FILE, self.known_hosts):
            if path.is_file() and path.read_text().startswith(MARKER):
                path.unlink()
        from coophost.lab.artifacts import forget_lab_release

        forget_lab_release(self.inventory)
        store = self.inventory / ".coophost" / "artifacts"
        if store.is_dir() and not any(store.iterdir()):
            store.rmdir()
        if self.workdir.is_dir():
            for item in sorted(self.workdir.rglob("*"), reverse=True):
                item.rmdir() if item.is_dir() else item.unlink()
            self.workdir.rmdir()
        for folder in (self.inventory / ".coophost", self.inventory):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        return removed


def wait_for_boot(container: str, timeout: float = 120.0) -> None:
    """Wait until systemd in `container` has finished booting (it remounts /tmp on the way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = docker.docker("exec", container, "systemctl", "is-system-running", check=False)
        if proc.stdout.decode().strip() in ("running", "degraded"):
            return
        time.sleep(0.3)
    raise ExternalCommandError(f"{container}: systemd did not finish booting in {timeout:.0f} s")


def wait_for_ssh(port: int, timeout: float = 60.0) -> None:
    """Wait until sshd on 127.0.0.1:`port` sends its banner."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise ExternalCommandError(f"sshd on 127.0.0.1:{port} did not answer in {timeout:.0f} s")


def _yaml_dump(data: Any) -> str:
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()
