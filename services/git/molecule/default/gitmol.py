"""Shared by the git scenario's test folders: git over SSH and HTTPS, run inside the instance.

Every command runs on the converged instance (testinfra's `host`), as root, with the test keys
prepare.yml made in /root/mol and the instance's pinned host key. Work trees live in /root/mol/w.
"""

import shlex

KEYS = "/root/mol"
OWNERS = {"alpha": "alpha.a1a1a1a1a1a1", "beta": "beta.b2b2b2b2b2b2", "gamma": "gamma.c3c3c3c3c3c3"}
GIT_ID = "-c user.name=Molecule -c user.email=molecule@mol.test"


def ssh_command(key):
    """The ssh command line using the test key `key` only, against the pinned host key."""
    return (f"ssh -i {KEYS}/{key} -o IdentitiesOnly=yes -o BatchMode=yes "
            f"-o UserKnownHostsFile={KEYS}/known_hosts -o StrictHostKeyChecking=yes")


def sh(host, script, key=None):
    """Run `script` with bash in the instance (GIT_SSH_COMMAND set for `key`)."""
    env = f"export GIT_SSH_COMMAND={shlex.quote(ssh_command(key))}; " if key else ""
    return host.run("bash -c %s", "set -eu; " + env + script)


def ok(host, script, key=None):
    """Run `script`; fail the test with its output unless it succeeds; return its stdout."""
    result = sh(host, script, key)
    assert result.rc == 0, f"rc {result.rc}\n{result.stdout}\n{result.stderr}"
    return result.stdout.strip()


def ssh_url(slug, repo):
    return f"g-{slug}@127.0.0.1:{repo}"


def https_url(slug, repo, password=None, user=None):
    credentials = f"{user or slug}:{password}@" if password else ""
    return f"https://{credentials}git.{slug}.test/{repo}.git"


def password(slug):
    return f"test-password-{slug}"


def new_commit(host, work, message, size_kb=0):
    """Commit one new file (random content when size_kb) in work tree `work`; return its id."""
    blob = (f"head -c {size_kb * 1024} /dev/urandom > data-{message}.bin"
            if size_kb else f"echo {shlex.quote(message)} > file-{message}.txt")
    return ok(host, f"cd {work} && {blob} && git add -A && "
                    f"git {GIT_ID} commit -q -m {shlex.quote(message)} && git rev-parse HEAD")


def fresh_tree(host, name, branch="main"):
    """An empty work tree /root/mol/w/<name> on `branch`."""
    work = f"{KEYS}/w/{name}"
    ok(host, f"rm -rf {work} && mkdir -p {KEYS}/w && git init -q -b {branch} {work}")
    return work


def refs(host, git_dir_or_url, key=None):
    """{ref: id} of a repository (a URL through git ls-remote, or a local bare path)."""
    out = ok(host, f"git ls-remote {shlex.quote(git_dir_or_url)}", key)
    return dict(reversed(line.split("\t")) for line in out.splitlines() if line)


def http_status(host, url, user=None, secret=None):
    """HTTP status and headers of a GET (curl inside the instance; the test CA is trusted)."""
    auth = f"-u {shlex.quote(user + ':' + secret)} " if user else ""
    out = ok(host, f"curl -s -o /dev/null -D - {auth}{shlex.quote(url)}")
    status = int(out.splitlines()[0].split()[1])
    return status, out.lower()


def remember(host, name, value):
    ok(host, f"printf %s {shlex.quote(value)} > {KEYS}/state-{name}")


def recall(host, name):
    return ok(host, f"cat {KEYS}/state-{name}")
