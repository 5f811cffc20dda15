"""Benchmark a member's data takeout: `coophost member export` against plain ssh + tar.

One lab host, one member with mail, its Maildir filled with generated messages (text, so it
compresses like mail does). In one run, side by side:

- `coophost member export SLUG --out FILE` (tar over SSH, streamed into a tar.gz with every
  file hashed, manifest and SHA256SUMS);
- the hand-made equivalent: `ssh host sudo tar -czf - PATH > FILE` with the same key;

and, for the export, the controller's peak memory (max RSS of the process) against the size
of the data: a streamed export holds only buffers, never a copy of the member's data.

    .venv/bin/python bench/export.py [--mb 200] [--keep]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COOPHOST = str(BIN / "coophost")
SLUG = "big-mail"
COOP = """\
name: Bench Co-op
domain: bxp.test
contacts: [admin@bxp.test]
acme: {directory: "https://acme.bxp.test:14000/dir", email: admin@bxp.test}
vault: {password_file: vault-password, create_password_file: true}
"""
MEMBER = f"""\
slug: {SLUG}
name: Big Mail
contact: office@{SLUG}.test
status: active
domains: [{SLUG}.test]
ssh_keys: []
services:
  mail: {{mailboxes: [office], quota_mb: 4096}}
placement: {{}}
"""
# Fills the Maildir with messages of ~64 KB of varied text (compresses about 3:1, as mail does).
FILL = """
import os, random, sys
target, total = sys.argv[1], int(sys.argv[2]) * 1024 * 1024
os.makedirs(target, exist_ok=True)
words = [("%x" % random.getrandbits(40)) for _ in range(5000)]
written = n = 0
while written < total:
    body = " ".join(random.choice(words) for _ in range(6000)).encode()
    with open(os.path.join(target, "%d.bench.%d:2,S" % (n, os.getpid())), "wb") as f:
        f.write(b"Subject: bench %d\\r\\n\\r\\n" % n + body)
    written += len(body); n += 1
print(n, written)
"""


def run(argv: list[str], **kw: object) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Run a command; return its wall time and result (exit on failure)."""
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, check=False, **kw)  # type: ignore[call-overload]
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(map(str, argv[:6]))} exited {proc.returncode}: "
                 f"{proc.stderr.decode(errors='replace')[-1500:]}")
    return took, proc


def peak_rss_mb(argv: list[str]) -> tuple[float, float]:
    """Run `argv` in a child process; return (wall seconds, its max RSS in MB)."""
    code = ("import resource, subprocess, sys, time\n"
            "t = time.perf_counter()\n"
            "rc = subprocess.run(sys.argv[1:]).returncode\n"
            "t = time.perf_counter() - t\n"
            "print(t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, rc)")
    _, proc = run([sys.executable, "-c", code, *argv])
    wall, rss, rc = proc.stdout.decode().split()
    if rc != "0":
        sys.exit(f"bench: {argv[:4]} exited {rc}")
    return float(wall), float(rss)


def main() -> int:
    """Bring up a one-host lab, fill a mailbox, time the exports, print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mb", type=int, default=200, help="MB of mail to export")
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    parser.add_argument("--name", default="bxp")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="coophost-bench-export-"))
    root = tmp / args.name
    (root / "members").mkdir(parents=True)
    (root / "coop.yml").write_text(COOP.replace("bxp", args.name))
    (root / "members" / f"{SLUG}.yml").write_text(MEMBER)
    try:
        run([COOPHOST, "-i", str(root), "lab", "up", "--name", args.name, "--hosts", "1"])
        print("bench: deploying mail on one lab host (installs packages the first time)...",
              flush=True)
        run([COOPHOST, "-i", str(root), "deploy"])
        maildir = f"/var/mail/vhosts/{SLUG}.test/office/Maildir/cur"
        container = f"coophost-{args.name}-h1"
        out = tmp / "export.tar.gz"
        export = [COOPHOST, "-i", str(root), "member", "export", SLUG, "--out", str(out)]
        small = max(1, args.mb // 20)
        _, filled = run(["docker", "exec", container, "python3", "-c", FILL, maildir,
                         str(small)])
        small_wall, small_rss = peak_rss_mb(export)
        _, more = run(["docker", "exec", container, "python3", "-c", FILL, maildir + "-more",
                       str(args.mb - small)])
        run(["docker", "exec", container, "sh", "-c",
             f"mv {maildir}-more/* {maildir}/ && rmdir {maildir}-more"])
        files, data = (a + b for a, b in zip(map(int, filled.stdout.split()),
                                             map(int, more.stdout.split()), strict=True))
        data_mb = data / 2**20
        wall, rss = peak_rss_mb(export)
        archive_mb = out.stat().st_size / 2**20
        # the same data by hand: ssh + tar + gzip on the host, the same key and pinned host key
        host = next(line for line in (root / "hosts.yml").read_text().splitlines()
                    if "ansible_port" in line).split(":")[1].strip()
        key = root / ".coophost" / "lab" / "id_ed25519"
        plain = tmp / "plain.tar.gz"
        with plain.open("wb") as handle:
            start = time.perf_counter()
            subprocess.run(
                ["ssh", "-i", str(key), "-p", host, "-o", "IdentitiesOnly=yes",
                 "-o", f"UserKnownHostsFile={root / 'known_hosts'}",
                 "-o", "StrictHostKeyChecking=yes", "coophost@127.0.0.1",
                 "sudo", "-n", "tar", "-czf", "-", "-C", "/", maildir.lstrip("/")],
                stdout=handle, check=True)
            plain_wall = time.perf_counter() - start
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\nmember data: {files} messages, {data_mb:.0f} MB in one Maildir")
        print(f"{'':38} {'wall':>8} {'MB/s':>8} {'archive':>9}")
        print(f"{'coophost member export (streamed)':38} {wall:7.1f}s {data_mb / wall:8.1f} "
              f"{archive_mb:7.0f}MB")
        print(f"{'ssh + tar -czf on the host':38} {plain_wall:7.1f}s "
              f"{data_mb / plain_wall:8.1f} {plain.stat().st_size / 2**20:7.0f}MB")
        print(f"export / plain ssh+tar: {wall / plain_wall:.2f}x the time "
              "(the export also hashes every file and writes the manifest)")
        print(f"controller peak memory (max RSS) of the export: {small_rss:.0f} MB for "
              f"{small} MB of data, {rss:.0f} MB for {data_mb:.0f} MB: x{rss / small_rss:.2f} "
              f"for x{data_mb / small:.0f} the data (this script: {own:.0f} MB; the small "
              f"export took {small_wall:.1f} s)")
    finally:
        if not args.keep:
            subprocess.run([COOPHOST, "-i", str(root), "lab", "down", "--name", args.name],
                           capture_output=True, check=False)
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
