"""The lab's Git proof: a member pushes over SSH, another machine clones over HTTPS.

For the first active member with a git unit on a lab host (public web on): a new commit is
pushed with the member's own key (the lab plays the member: coophost.lab.memberkeys) to its
gitolite account over SSH with the host key pinned, the repository is made public
(gitolite's `perms ... + READERS daemon`), the controller clones it over HTTPS from the
member's vhost (resolved through the lab DNS, verified against the lab ACME root), the commit
ids must match, and the cgit pages list the repository and show the commit.

Everything is reached on 127.0.0.1 (the hosts' published SSH ports, the lab DNS and ACME
ports) or on the lab network (the hosts' lab addresses); nothing else is contacted.
"""

from __future__ import annotations

import base64
import http.client
import os
import shlex
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from coophost.errors import UsageError
from coophost.lab.lab import Lab, LabState
from coophost.lab.memberkeys import key_path
from coophost.layout import KNOWN_HOSTS_FILE
from coophost.services import ProbeCheck, ProbeResult

PROBE_REPO = "coophost-probe"
GIT_USER_PREFIX = "g-"  # services/git: the member's gitolite account is g-<slug>


@dataclass(frozen=True)
class GitUnit:
    """A member's git unit on a lab host, and how to reach it."""

    slug: str
    host: str
    host_ip: str
    ssh_port: int
    vhost: str
    branch: str
    public_web: bool
    key: Path

    @property
    def account(self) -> str:
        """The member's gitolite account on its host."""
        return GIT_USER_PREFIX + self.slug

    def ssh_url(self, repo: str) -> str:
        """The SSH URL of one of the member's repositories (through the published port)."""
        return f"ssh://{self.account}@127.0.0.1:{self.ssh_port}/{repo}"


def git_units(root: Path, state: LabState, workdir: Path) -> list[GitUnit]:
    """Every active member's git unit placed on a lab host, for which the lab has a key."""
    from coophost.desired.units import compute
    from coophost.registry.loader import load_registry

    loaded = load_registry(root)
    hosts = {h.name: h for h in state.hosts}
    found = []
    for (slug, service), unit in sorted(compute(loaded).units.items()):
        member = loaded.registry.members[slug]
        if service != "git" or member.status != "active" or unit.host not in hosts:
            continue
        settings = member.services["git"]
        host = hosts[unit.host]
        found.append(GitUnit(slug, unit.host, host.ip, host.ssh_port, settings["vhost"],
                             settings["default_branch"], bool(settings["public_web"]),
                             key_path(workdir, slug)))
    return found


def ssh_command(key: Path, known_hosts: Path) -> str:
    """GIT_SSH_COMMAND for one key, against the pinned known_hosts only.

    Both paths are made absolute: git runs ssh from the repository's folder.
    """
    key, known_hosts = key.absolute(), known_hosts.absolute()
    return shlex.join(["ssh", "-i", str(key), "-o", "IdentitiesOnly=yes",
                       "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
                       "-o", f"UserKnownHostsFile={known_hosts}",
                       "-o", "GlobalKnownHostsFile=/dev/null",
                       "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"])


def git(*args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None,
        timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run git (no user or system config, no credential prompts); never raises on failure."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd or "/nonexistent"),
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "LC_ALL": "C",
            "GIT_AUTHOR_NAME": "coophost probe", "GIT_AUTHOR_EMAIL": "probe@lab.test",
            "GIT_COMMITTER_NAME": "coophost probe", "GIT_COMMITTER_EMAIL": "probe@lab.test"}
    return subprocess.run(["git", *args], cwd=cwd, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, check=False)


def resolve(name: str, dns_port: int) -> str:
    """The IPv4 address the lab DNS gives `name` ('' when it has none)."""
    import dns.exception
    import dns.resolver

    res = dns.resolver.Resolver(configure=False)
    res.nameservers, res.port, res.lifetime = ["127.0.0.1"], dns_port, 5.0
    try:
        return str(res.resolve(name, "A", search=False)[0])
    except dns.exception.DNSException:
        return ""


def https_get(address: str, vhost: str, path: str, cafile: Path,
              auth: tuple[str, str] | None = None, timeout: float = 20.0
              ) -> tuple[int, dict[str, str], bytes]:
    """GET https://<vhost><path> from `address`, verified for `vhost` against `cafile`."""
    context = ssl.create_default_context(cafile=str(cafile))
    raw = socket.create_connection((address, 443), timeout=timeout)
    conn = http.client.HTTPSConnection(vhost, 443, timeout=timeout, context=context)
    conn.sock = context.wrap_socket(raw, server_hostname=vhost)
    headers = {"Host": vhost, "User-Agent": "coophost-probe"}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(
            f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        conn.request("GET", path, headers=headers)
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


def https_git_config(vhost: str, address: str, cafile: Path) -> list[str]:
    """Options (`git -c`) reaching `vhost` at `address` over HTTPS, verified against `cafile`."""
    return ["-c", f"http.curloptResolve={vhost}:443:{address}",
            "-c", f"http.sslCAInfo={cafile}", "-c", "http.sslVerify=true",
            "-c", "credential.helper="]


def commits(repo: Path) -> list[str]:
    """Every commit id reachable from the repository's refs, sorted."""
    out = git("rev-list", "--all", cwd=repo)
    return sorted(out.stdout.split()) if out.returncode == 0 else []


def prove(the_lab: Lab, timeout: float = 90.0) -> ProbeResult:
    """Run the Git proof on the first suitable git unit of the lab."""
    from coophost.lab.mailcheck import acme_roots, lab_state

    state = lab_state(the_lab)
    units = [u for u in git_units(the_lab.inventory, state, the_lab.workdir) if u.public_web]
    if not units:
        raise UsageError("no active member with a git unit (public_web on) on a lab host: "
                         "enable git for a member and deploy first")
    unit = units[0]
    if not unit.key.is_file():
        raise UsageError(f"the lab holds no key for member {unit.slug}: run `coophost lab up`")
    checks: list[ProbeCheck] = []

    def check(name: str, ok: bool, detail: str) -> bool:
        checks.append(ProbeCheck(name, ok, detail))
        return ok

    env = {"GIT_SSH_COMMAND": ssh_command(unit.key, the_lab.inventory / KNOWN_HOSTS_FILE)}
    with tempfile.TemporaryDirectory(prefix="coophost-gitprobe-") as scratch:
        work, clone, cafile = Path(scratch, "work"), Path(scratch, "clone"), Path(scratch, "ca")
        cafile.write_text(acme_roots(the_lab, state))
        git("init", "-q", "-b", unit.branch, str(work))
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        (work / "README").write_text(f"pushed by coophost lab probe at {stamp}\n")
        git("add", "README", cwd=work)
        git("commit", "-q", "-m", f"probe {stamp}", cwd=work)
        head = git("rev-parse", "HEAD", cwd=work).stdout.strip()
        pushed = git("push", "-q", "--force", unit.ssh_url(PROBE_REPO),
                     f"HEAD:refs/heads/{unit.branch}", cwd=work, env=env, timeout=timeout)
        if not check("ssh push", pushed.returncode == 0,
                     f"{unit.account}@{unit.host}:{PROBE_REPO} {head[:12]} with "
                     f"{unit.slug}'s key" if pushed.returncode == 0
                     else pushed.stderr.strip()[-300:]):
            return ProbeResult(f"git: {unit.slug} on {unit.host}", tuple(checks))
        perms = subprocess.run(
            [*shlex.split(env["GIT_SSH_COMMAND"]), "-p", str(unit.ssh_port),
             f"{unit.account}@127.0.0.1", "perms", PROBE_REPO, "+", "READERS", "daemon"],
            capture_output=True, text=True, timeout=timeout, check=False)
        check("made public", perms.returncode == 0,
              "gitolite perms + READERS daemon" if perms.returncode == 0
              else perms.stderr.strip()[-300:])
        address = resolve(unit.vhost, state.dns_port)
        if not check("vhost in DNS", address == unit.host_ip,
                     f"{unit.vhost} -> {address or 'nothing'} (host {unit.host_ip})"):
            return ProbeResult(f"git: {unit.slug} on {unit.host}", tuple(checks))
        cloned = git(*https_git_config(unit.vhost, address, cafile), "clone", "-q",
                     f"https://{unit.vhost}/{PROBE_REPO}.git", str(clone), cwd=Path(scratch),
                     timeout=timeout)
        check("https clone", cloned.returncode == 0,
              f"https://{unit.vhost}/{PROBE_REPO}.git from the controller, lab ACME root"
              if cloned.returncode == 0 else cloned.stderr.strip()[-300:])
        theirs = commits(clone) if cloned.returncode == 0 else []
        check("same commits", theirs == commits(work) and head in theirs,
              f"{len(theirs)} commit(s), HEAD {head[:12]}")
        status, _, body = https_get(address, unit.vhost, "/", cafile)
        check("cgit lists it", status == 200 and PROBE_REPO.encode() in body,
              f"https://{unit.vhost}/ answered {status}")
        status, _, body = https_get(address, unit.vhost, f"/{PROBE_REPO}/log/", cafile)
        check("cgit shows the commit", status == 200 and f"probe {stamp}".encode() in body,
              f"https://{unit.vhost}/{PROBE_REPO}/log/ answered {status}")
    return ProbeResult(f"git: {unit.slug} ({unit.host}) pushed over SSH, cloned over HTTPS "
                       f"from {unit.vhost}", tuple(checks))
