"""Git hosting on real lab hosts, end to end: SSH push with the member's own key, anonymous
HTTPS clone of public repositories, private ones hidden, authenticated HTTPS push, members
isolated, suspension, redeploy, and takeout bundles.

cycle-works has git in the sample co-op (the lab holds its key: coophost.lab.memberkeys);
the test adds git for ada-books on the same host, with a key of its own, so isolation is
tested between two members of one host. Traffic goes only to 127.0.0.1 (published SSH ports,
lab DNS and ACME) and to the lab hosts on the lab network.
"""

from __future__ import annotations

import base64
import http.client
import json
import shlex
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coophost.lab.gitprobe import (
    GitUnit,
    commits,
    git,
    git_units,
    https_get,
    https_git_config,
    resolve,
    ssh_command,
)
from coophost.lab.keys import ssh_keypair
from coophost.lab.lab import Lab, LabState
from coophost.lab.mailcheck import acme_roots, lab_state
from coophost.layout import KNOWN_HOSTS_FILE
from coophost.registry.loader import load_registry
from coophost.secrets import SecretStore
from tests.integration.conftest import LabInfo

pytestmark = pytest.mark.lab

A = "cycle-works"  # git in the sample co-op
B = "ada-books"  # given git by this module, on A's host


@dataclass
class GitLab:
    """The lab with A's and B's git units deployed and their vhosts' certificates issued."""

    info: LabInfo
    lab: Lab
    state: LabState
    units: dict[str, GitUnit]
    keys: dict[str, Path]
    cafile: Path
    scratch: Path

    def unit(self, slug: str) -> GitUnit:
        return self.units[slug]

    def container(self, slug: str) -> str:
        return self.lab.container(self.units[slug].host)

    def env(self, key_of: str) -> dict[str, str]:
        """Git's environment pushing with `key_of`'s key (host keys pinned)."""
        return {"GIT_SSH_COMMAND": ssh_command(self.keys[key_of],
                                               self.info.inventory / KNOWN_HOSTS_FILE)}

    def address(self, slug: str) -> str:
        return resolve(self.units[slug].vhost, self.state.dns_port)

    def https(self, slug: str) -> list[str]:
        return https_git_config(self.units[slug].vhost, self.address(slug), self.cafile)

    def url(self, slug: str, repo: str) -> str:
        return f"https://{self.units[slug].vhost}/{repo}.git"

    def get(self, slug: str, path: str, auth: tuple[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
        return https_get(self.address(slug), self.units[slug].vhost, path, self.cafile, auth)

    def password(self, slug: str) -> str:
        loaded = load_registry(self.info.inventory)
        store = SecretStore(self.info.inventory, loaded.registry.coop.vault, loaded.catalogue)
        value = store.stored(loaded.registry.members[slug].owner, "git", "http_password")
        assert value, f"{slug} has no git HTTPS password"
        return value

    def owner(self, slug: str) -> str:
        return load_registry(self.info.inventory).registry.members[slug].owner

    def on_host(self, slug: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "exec", self.container(slug), *argv],
                              capture_output=True, text=True, timeout=120, check=False)

    def ssh(self, key_of: str, slug: str, *command: str) -> subprocess.CompletedProcess[str]:
        """Run a gitolite command on `slug`'s account with `key_of`'s key."""
        unit = self.units[slug]
        return subprocess.run(
            [*shlex.split(self.env(key_of)["GIT_SSH_COMMAND"]), "-p", str(unit.ssh_port),
             f"{unit.account}@127.0.0.1", *command],
            capture_output=True, text=True, timeout=60, check=False)

    def new_repo(self, name: str, files: dict[str, bytes], commits_count: int = 1) -> Path:
        """A local repository with `commits_count` commits touching `files`."""
        work = self.scratch / name
        git("init", "-q", "-b", "main", str(work))
        for index in range(commits_count):
            for path, data in files.items():
                target = work / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data + str(index).encode())
            git("add", "-A", cwd=work)
            assert git("commit", "-q", "-m", f"{name} {index}", cwd=work).returncode == 0
        return work

    def push(self, key_of: str, slug: str, work: Path, repo: str
             ) -> subprocess.CompletedProcess[str]:
        return git("push", "-q", self.units[slug].ssh_url(repo), "--all", cwd=work,
                   env=self.env(key_of))


def _deploy(info: LabInfo, *args: str) -> dict[str, object]:
    proc = info.cli("deploy", "--json", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report: dict[str, object] = json.loads(proc.stdout)
    return report


def _basic(user: str, password: str) -> list[str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return ["-c", f"http.extraHeader=Authorization: Basic {token}"]


@pytest.fixture(scope="module")
def gitlab(lab: LabInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitLab]:
    scratch = tmp_path_factory.mktemp("git")
    the_lab = Lab(lab.name, lab.inventory)
    a_key = the_lab.workdir / "member-keys" / A
    assert a_key.is_file(), "lab up made no key for cycle-works (git in the sample co-op)"
    b_pair = ssh_keypair(f"{B}@test")
    b_key = scratch / "b_key"
    b_key.write_bytes(b_pair.private)
    b_key.chmod(0o600)
    lab.cli("member", "edit", B, "--add-ssh-key", b_pair.public, check=True)
    lab.cli("service", "enable", B, "git", check=True)
    state = lab_state(the_lab)
    a_host = next(u for u in git_units(lab.inventory, state, the_lab.workdir) if u.slug == A)
    lab.cli("member", "move", B, "git", a_host.host, "--force", check=True)
    lab.cli("render", check=True)  # secrets exist before DNS is published
    lab.cli("lab", "dns", "sync", "--name", lab.name, check=True)  # vhosts resolve for ACME
    _deploy(lab)
    units = {u.slug: u for u in git_units(lab.inventory, state, the_lab.workdir)}
    assert {A, B} <= set(units), units
    cafile = scratch / "acme-root.pem"
    cafile.write_text(acme_roots(the_lab, state))
    info = GitLab(lab, the_lab, state, units, {A: a_key, B: b_key}, cafile, scratch)
    # the vhosts' own certificates (issued once their names resolve), not the stand-in
    for slug in (A, B):
        status, _, _ = info.get(slug, "/")
        assert status in (200, 404), (slug, status)
    yield info
    # B's git goes away again (the modules after this one know B as mail only): its unit
    # leaves the host, whose role archives the data rather than deleting it
    lab.cli("service", "disable", B, "git", check=True)
    _deploy(lab)
    archived = info.on_host(A, "ls", "/srv/git/archive")
    assert info.owner(B) in archived.stdout, archived.stdout + archived.stderr


def test_ssh_push_with_own_key_and_refused_with_another_members_key(gitlab: GitLab):
    work = gitlab.new_repo("own-key", {"a.txt": b"A's work "})
    pushed = gitlab.push(A, A, work, "own-key")
    assert pushed.returncode == 0, pushed.stderr
    listed = git("ls-remote", gitlab.unit(A).ssh_url("own-key"), env=gitlab.env(A))
    assert commits(work)[0] in listed.stdout
    refused = gitlab.push(B, A, work, "b-was-here")  # B's key on A's account
    assert refused.returncode != 0
    assert "Permission denied" in refused.stderr, refused.stderr
    assert gitlab.push(A, B, work, "a-was-here").returncode != 0  # and the other way round
    info = gitlab.ssh(A, A, "info")
    assert info.returncode == 0 and "own-key" in info.stdout, info.stdout + info.stderr
    assert "b-was-here" not in gitlab.ssh(B, B, "info").stdout


def test_anonymous_https_clone_of_a_public_repository_is_byte_identical(gitlab: GitLab):
    blob = bytes(range(256)) * 512  # binary content, 128 KiB
    work = gitlab.new_repo("public-repo", {"data.bin": blob, "docs/README": b"hello "},
                           commits_count=5)
    assert gitlab.push(A, A, work, "public-repo").returncode == 0
    made = gitlab.ssh(A, A, "perms", "public-repo", "+", "READERS", "daemon")
    assert made.returncode == 0, made.stderr
    clone = gitlab.scratch / "public-clone"
    cloned = git(*gitlab.https(A), "clone", "-q", gitlab.url(A, "public-repo"), str(clone),
                 cwd=gitlab.scratch)
    assert cloned.returncode == 0, cloned.stderr
    assert commits(clone) == commits(work) and len(commits(work)) == 5
    assert (clone / "data.bin").read_bytes() == (work / "data.bin").read_bytes()
    assert git("fsck", "--full", "--strict", cwd=clone).returncode == 0
    status, _, body = gitlab.get(A, "/")
    assert status == 200 and b"public-repo" in body
    status, _, body = gitlab.get(A, "/public-repo/log/")
    assert status == 200 and b"public-repo 4" in body


def test_plain_http_to_the_vhost_is_redirected_to_https(gitlab: GitLab):
    conn = http.client.HTTPConnection(gitlab.address(A), 80, timeout=20)
    try:
        conn.request("GET", "/public-repo/log/?h=main", headers={"Host": gitlab.unit(A).vhost})
        answer = conn.getresponse()
        location = answer.getheader("Location")
    finally:
        conn.close()
    assert answer.status == 301
    assert location == f"https://{gitlab.unit(A).vhost}/public-repo/log/?h=main"


def test_private_repository_is_hidden_over_https_and_in_cgit(gitlab: GitLab):
    work = gitlab.new_repo("secret-plans", {"plan.txt": b"private "})
    assert gitlab.push(A, A, work, "secret-plans").returncode == 0
    status, _, body = gitlab.get(A, "/")
    assert status == 200 and b"secret-plans" not in body
    for path in ("/secret-plans/", "/secret-plans/log/", "/secret-plans/tree/plan.txt"):
        assert gitlab.get(A, path)[0] == 404, path
    # smart HTTP: a private repository answers exactly as a missing one does
    private = gitlab.get(A, "/secret-plans.git/info/refs?service=git-upload-pack")
    missing = gitlab.get(A, "/no-such-repo.git/info/refs?service=git-upload-pack")
    assert private[0] == missing[0] and private[0] in (401, 404), (private[0], missing[0])
    assert b"secret" not in private[2]
    cloned = git(*gitlab.https(A), "clone", "-q", gitlab.url(A, "secret-plans"),
                 str(gitlab.scratch / "nope"), cwd=gitlab.scratch)
    assert cloned.returncode != 0
    assert not (gitlab.scratch / "nope" / "plan.txt").exists()


def test_authenticated_https_push_works_and_a_wrong_password_is_refused(gitlab: GitLab):
    work = gitlab.new_repo("over-https", {"f.txt": b"v "})
    assert gitlab.push(A, A, work, "over-https").returncode == 0
    password = gitlab.password(A)
    clone = gitlab.scratch / "https-clone"
    cloned = git(*gitlab.https(A), *_basic(A, password), "clone", "-q",
                 gitlab.url(A, "over-https"), str(clone), cwd=gitlab.scratch)
    assert cloned.returncode == 0, cloned.stderr
    (clone / "g.txt").write_text("pushed over https\n")
    git("add", "g.txt", cwd=clone)
    git("commit", "-q", "-m", "over https", cwd=clone)
    head = git("rev-parse", "HEAD", cwd=clone).stdout.strip()
    pushed = git(*gitlab.https(A), *_basic(A, password), "push", "-q", "origin", "main",
                 cwd=clone)
    assert pushed.returncode == 0, pushed.stderr
    listed = git("ls-remote", gitlab.unit(A).ssh_url("over-https"), env=gitlab.env(A))
    assert head in listed.stdout
    wrong = git(*gitlab.https(A), *_basic(A, password[:-1] + "#"), "push", "-q", "origin",
                "main:refs/heads/wrong", cwd=clone)
    assert wrong.returncode != 0
    status, _, _ = gitlab.get(A, "/over-https.git/info/refs?service=git-receive-pack",
                              auth=(A, password[:-1] + "#"))
    assert status == 401
    # B's own password does not open A's vhost either
    status, _, _ = gitlab.get(A, "/over-https.git/info/refs?service=git-receive-pack",
                              auth=(B, gitlab.password(B)))
    assert status in (401, 403)
    assert "refs/heads/wrong" not in git("ls-remote", gitlab.unit(A).ssh_url("over-https"),
                                         env=gitlab.env(A)).stdout


def test_member_a_cannot_read_member_b_repositories(gitlab: GitLab):
    work = gitlab.new_repo("b-private", {"b.txt": b"B only "})
    assert gitlab.push(B, B, work, "b-private").returncode == 0
    b_home = f"/srv/git/units/{gitlab.owner(B)}"
    a_user = gitlab.unit(A).account
    assert gitlab.unit(A).host == gitlab.unit(B).host
    listed = gitlab.on_host(B, "ls", f"{b_home}/repositories/b-private.git/objects")
    assert listed.returncode == 0, listed.stderr  # root sees it: the path is right
    for argv in (["ls", b_home], ["ls", f"{b_home}/repositories"],
                 ["cat", f"{b_home}/repositories/b-private.git/HEAD"],
                 ["git", "-C", f"{b_home}/repositories/b-private.git", "log"]):
        tried = gitlab.on_host(B, "runuser", "-u", a_user, "--", *argv)
        assert tried.returncode != 0, (argv, tried.stdout)
    for user in ("www-data", "nobody"):
        tried = gitlab.on_host(B, "runuser", "-u", user, "--", "ls", b_home)
        assert tried.returncode != 0, user
    mode = gitlab.on_host(B, "stat", "-c", "%a %U", b_home).stdout.split()
    assert mode == ["700", gitlab.unit(B).account]
    # A's gitolite cannot be led to B's repositories by name
    assert gitlab.ssh(A, A, "info", "-lc").stdout.count("b-private") == 0


def test_suspension_stops_pushes_and_private_clones_and_resume_restores(gitlab: GitLab):
    work = gitlab.new_repo("during-suspension", {"s.txt": b"s "})
    assert gitlab.push(A, A, work, "during-suspension").returncode == 0
    password = gitlab.password(A)
    gitlab.info.cli("member", "suspend", A, check=True)
    _deploy(gitlab.info, "--member", A)
    try:
        (work / "s.txt").write_text("while suspended\n")
        git("commit", "-qam", "suspended", cwd=work)
        assert gitlab.push(A, A, work, "during-suspension").returncode != 0
        private = git(*gitlab.https(A), *_basic(A, password), "clone", "-q",
                      gitlab.url(A, "during-suspension"),
                      str(gitlab.scratch / "suspended-clone"), cwd=gitlab.scratch)
        assert private.returncode != 0
        status, _, body = gitlab.get(A, "/")  # public pages stay
        assert status == 200 and b"public-repo" in body
        public = git(*gitlab.https(A), "clone", "-q", gitlab.url(A, "public-repo"),
                     str(gitlab.scratch / "public-while-suspended"), cwd=gitlab.scratch)
        assert public.returncode == 0, public.stderr
    finally:
        gitlab.info.cli("member", "resume", A, check=True)
        _deploy(gitlab.info, "--member", A)
    pushed = gitlab.push(A, A, work, "during-suspension")
    assert pushed.returncode == 0, pushed.stderr
    again = git(*gitlab.https(A), *_basic(A, password), "clone", "-q",
                gitlab.url(A, "during-suspension"), str(gitlab.scratch / "resumed-clone"),
                cwd=gitlab.scratch)
    assert again.returncode == 0, again.stderr


def _refs(gitlab: GitLab, slug: str, repos: list[str]) -> dict[str, str]:
    return {repo: git("ls-remote", gitlab.unit(slug).ssh_url(repo),
                      env=gitlab.env(slug)).stdout for repo in repos}


def test_redeploy_changes_nothing_and_loses_no_commit(gitlab: GitLab):
    work = gitlab.new_repo("keep-me", {"k.txt": b"k "}, commits_count=3)
    assert gitlab.push(A, A, work, "keep-me").returncode == 0
    before = _refs(gitlab, A, ["keep-me", "gitolite-admin"])
    assert all(before.values()), before
    # the whole play of the host that holds the repositories
    report = _deploy(gitlab.info, "--all", "--host", gitlab.unit(A).host)
    hosts = report["hosts"]
    assert isinstance(hosts, dict) and list(hosts) == [gitlab.unit(A).host], hosts
    for name, host in hosts.items():
        assert (host["status"], host["changed"], host["failed"]) == ("ok", 0, 0), (name, host)
    assert _refs(gitlab, A, ["keep-me", "gitolite-admin"]) == before


def test_export_bundles_verify_and_clone_back_to_the_same_commits(gitlab: GitLab):
    work = gitlab.new_repo("take-me-out", {"t.txt": b"t "}, commits_count=4)
    assert gitlab.push(A, A, work, "take-me-out").returncode == 0
    archive = gitlab.scratch / "a-export.tar.gz"
    gitlab.info.cli("member", "export", A, "--out", str(archive), check=True)
    host = gitlab.unit(A).host
    prefix = f"git/{host}/export/"
    out = gitlab.scratch / "export"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        bundles = [n for n in names if n.startswith(prefix + "bundles/")
                   and n.endswith(".bundle")]
        assert f"{prefix}gitolite/conf/gitolite.conf" in names, names
        tar.extractall(out, members=[m for m in tar.getmembers()
                                     if m.name.startswith(prefix)], filter="data")
    by_repo = {Path(n).name.removesuffix(".bundle"): out / n for n in bundles}
    assert {"take-me-out", "public-repo", "gitolite-admin"} <= set(by_repo), sorted(by_repo)
    verifier = gitlab.scratch / "verifier"  # git bundle verify runs inside some repository
    assert git("init", "-q", str(verifier), cwd=gitlab.scratch).returncode == 0
    for repo, bundle in by_repo.items():
        verified = git("bundle", "verify", str(bundle), cwd=verifier)
        assert verified.returncode == 0, (repo, verified.stderr)
    restored = gitlab.scratch / "restored"
    assert git("clone", "-q", str(by_repo["take-me-out"]), str(restored),
               cwd=gitlab.scratch).returncode == 0
    assert commits(restored) == commits(work)
    assert (restored / "t.txt").read_bytes() == (work / "t.txt").read_bytes()
    # nothing of B's in A's takeout
    assert not any("b-private" in n or gitlab.owner(B) in n for n in names)
