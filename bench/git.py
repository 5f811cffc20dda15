"""Benchmark Git through the co-op against plain git over SSH to the same host.

One run on a one-host lab: a repository of 10,000 commits and about 100 MB (a small text
change per commit, and a 1 MB incompressible file every 100 commits) is pushed and cloned

- through the co-op: SSH to the member's gitolite account (gitolite-shell, its access
  checks, the quota hook), and cloned over HTTPS (nginx, fcgiwrap as the member, gitolite's
  smart HTTP, TLS verified against the lab ACME root);
- with plain git over SSH: the same sshd, the host's admin account, a bare repository in
  its home: what a sysadmin without coophost would run.

Runs alternate (co-op, plain, plain, co-op, ...) with a fresh repository name each time so the
noise of this machine hits both alike; medians and the co-op/plain ratios are printed. The
issue's target: the co-op's layers cost under 1.2x.

    .venv/bin/python bench/git.py [--commits 10000] [--mb 100] [--repeat 2] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coophost.lab.gitprobe import git, git_units, https_git_config, resolve, ssh_command  # noqa: E402
from coophost.lab.lab import Lab  # noqa: E402
from coophost.lab.mailcheck import acme_roots, lab_state  # noqa: E402

COOPHOST = str(Path(sys.executable).parent / "coophost")
SLUG = "bench-git"
COOP = """\
name: Bench Git Co-op
domain: {name}.test
contacts: [admin@{name}.test]
acme: {{directory: "https://acme.{name}.test:14000/dir", email: admin@{name}.test}}
vault: {{password_file: vault-password, create_password_file: true}}
"""
MEMBER = f"""\
slug: {SLUG}
name: Bench Git
contact: office@{SLUG}.test
status: active
domains: [{SLUG}.test]
ssh_keys: []
services:
  git: {{quota_mb: 4096}}
placement: {{}}
"""


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; stop the bench loudly when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        sys.exit(f"bench: {shlex.join(argv[:6])}... exited {proc.returncode}:\n"
                 f"{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    return proc


def timed_git(*args: str, cwd: Path, env: dict[str, str] | None = None) -> float:
    """Run git, return its wall time; stop the bench when it fails."""
    start = time.perf_counter()
    proc = git(*args, cwd=cwd, env=env, timeout=1800)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bench: git {' '.join(args[:4])}... failed: {proc.stderr[-1500:]}")
    return took


def make_repository(path: Path, commits: int, megabytes: int) -> None:
    """A repository of `commits` commits holding about `megabytes` MB (git fast-import)."""
    git("init", "-q", "-b", "main", str(path))
    every = max(1, commits // max(1, megabytes))
    proc = subprocess.Popen(["git", "fast-import", "--quiet"], cwd=path,
                            stdin=subprocess.PIPE, env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1"})
    assert proc.stdin is not None
    out = proc.stdin
    for n in range(commits):
        files = [(f"src/file{n % 100:02d}.txt", f"line {n} {os.urandom(48).hex()}\n".encode())]
        if n % every == 0:
            files.append((f"blobs/b{n:05d}.bin", os.urandom(1024 * 1024)))
        message = f"commit {n}\n".encode()
        out.write(b"commit refs/heads/main\n")
        out.write(f"committer Bench <bench@lab.test> {1_700_000_000 + n} +0000\n".encode())
        out.write(b"data %d\n%s" % (len(message), message))
        for name, data in files:
            out.write(f"M 644 inline {name}\ndata {len(data)}\n".encode() + data + b"\n")
        out.write(b"\n")
    out.close()
    if proc.wait() != 0:
        sys.exit("bench: git fast-import failed")
    git("checkout", "-q", "main", cwd=path)


def main() -> int:
    """Bring up a one-host lab with a git member, time pushes and clones, print ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--commits", type=int, default=10_000)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    parser.add_argument("--name", default="bgit")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="coophost-bench-git-"))
    root = tmp / args.name
    (root / "members").mkdir(parents=True)
    (root / "coop.yml").write_text(COOP.format(name=args.name))
    (root / "members" / f"{SLUG}.yml").write_text(MEMBER)
    try:
        run([COOPHOST, "-i", str(root), "lab", "up", "--name", args.name, "--hosts", "1"])
        run([COOPHOST, "-i", str(root), "render"])
        run([COOPHOST, "-i", str(root), "lab", "dns", "sync", "--name", args.name])
        print("bench: deploying git on one lab host (installs packages the first time)...",
              flush=True)
        run([COOPHOST, "-i", str(root), "deploy"])
        the_lab = Lab(args.name, root)
        state = lab_state(the_lab)
        unit = git_units(root, state, the_lab.workdir)[0]
        host = state.hosts[0]
        container = the_lab.container(host.name)
        cafile = tmp / "acme-root.pem"
        cafile.write_text(acme_roots(the_lab, state))
        address = resolve(unit.vhost, state.dns_port)
        known = root / "known_hosts"
        member_env = {"GIT_SSH_COMMAND": ssh_command(unit.key, known)}
        admin_env = {"GIT_SSH_COMMAND": ssh_command(the_lab.key_file, known)}
        admin = f"ssh://coophost@127.0.0.1:{host.ssh_port}"
        source = tmp / "source"
        start = time.perf_counter()
        make_repository(source, args.commits, args.mb)
        size = sum(f.stat().st_size for f in (source / ".git").rglob("*") if f.is_file())
        print(f"bench: repository of {args.commits} commits, {size / 1e6:.0f} MB in .git "
              f"(made in {time.perf_counter() - start:.0f} s)", flush=True)
        times: dict[str, list[float]] = {k: [] for k in
                                         ("push coop", "push plain", "clone coop ssh",
                                          "clone plain ssh", "clone coop https")}
        order = ["coop", "plain", "plain", "coop"] * args.repeat
        for index, kind in enumerate(order[: 2 * args.repeat]):
            name = f"bench-{index}"
            target = tmp / f"clone-{index}"
            if kind == "coop":
                times["push coop"].append(timed_git(
                    "push", "-q", unit.ssh_url(name), "main", cwd=source, env=member_env))
                times["clone coop ssh"].append(timed_git(
                    "clone", "-q", "--bare", unit.ssh_url(name), str(target), cwd=tmp,
                    env=member_env))
                run([*shlex.split(member_env["GIT_SSH_COMMAND"]), "-p", str(host.ssh_port),
                     f"{unit.account}@127.0.0.1", "perms", name, "+", "READERS", "daemon"])
                times["clone coop https"].append(timed_git(
                    *https_git_config(unit.vhost, address, cafile), "clone", "-q", "--bare",
                    f"https://{unit.vhost}/{name}.git", str(target) + "-https", cwd=tmp))
            else:
                run(["docker", "exec", container, "runuser", "-u", "coophost", "--", "git",
                     "init", "-q", "--bare", f"/home/coophost/{name}.git"])
                times["push plain"].append(timed_git(
                    "push", "-q", f"{admin}/home/coophost/{name}.git", "main", cwd=source,
                    env=admin_env))
                times["clone plain ssh"].append(timed_git(
                    "clone", "-q", "--bare", f"{admin}/home/coophost/{name}.git", str(target),
                    cwd=tmp, env=admin_env))
        med = {k: statistics.median(v) for k, v in times.items() if v}
        print(f"\n{'operation':<20}{'median s':>10}   runs")
        for key, value in med.items():
            print(f"{key:<20}{value:>10.2f}   {', '.join(f'{t:.2f}' for t in times[key])}")
        print(f"\nratio push  co-op SSH / plain SSH:  {med['push coop'] / med['push plain']:.2f}")
        print(f"ratio clone co-op SSH / plain SSH:  "
              f"{med['clone coop ssh'] / med['clone plain ssh']:.2f}")
        print(f"ratio clone co-op HTTPS / plain SSH: "
              f"{med['clone coop https'] / med['clone plain ssh']:.2f}")
    finally:
        if not args.keep:
            subprocess.run([COOPHOST, "-i", str(root), "lab", "down", "--name", args.name],
                           capture_output=True, check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
