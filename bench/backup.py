"""Benchmark backups: `coophost backup run` against plain `borg create` by hand, same data.

A lab with one service host and the backup host b1; one member with 200 MB of mail (generated
text messages of about 64 KB, compressing like mail). In one run, side by side, into fresh
repositories on b1 through the same borg sshd, key and compression (zstd,3):

- first backup: `coophost backup run` (coophost-backup on the host: the manifest, a SHA-256
  of every file, then `borg create` of exactly those files) against `borg create` of the
  member's folder by hand;
- incremental backups after 1% and after 10% of the mail changed (new messages arriving):
  the time should follow the change, not the total;
- restore: `coophost backup restore --to` on the controller (extract and compare every file
  with the manifest), in MB/s.

    .venv/bin/python bench/backup.py [--mb 200] [--keep]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from export import run  # noqa: E402 - bench/export.py, beside this script

BIN = Path(sys.executable).parent
COOPHOST = str(BIN / "coophost")
SLUG = "big-mail"
COOP = """\
name: Bench Co-op
domain: bbk.test
contacts: [admin@bbk.test]
acme: {directory: "https://acme.bbk.test:14000/dir", email: admin@bbk.test}
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
FILL = """
import os, random, sys
target, total, tag = sys.argv[1], int(sys.argv[2]) * 1024 * 1024, sys.argv[3]
os.makedirs(target, exist_ok=True)
words = [("%x" % random.getrandbits(40)) for _ in range(5000)]
written = n = 0
while written < total:
    body = " ".join(random.choice(words) for _ in range(6000)).encode()
    with open(os.path.join(target, "%s.%d.bench:2,S" % (tag, n)), "wb") as f:
        f.write(b"Subject: bench %d\\r\\n\\r\\n" % n + body)
    written += len(body); n += 1
os.system("chown -R vmail:vmail " + target)
print(n, written)
"""


def main() -> int:
    """Bring up the lab, fill a mailbox, time backups both ways, print figures and ratios."""
    from coophost.backup.model import repo_url, server_address
    from coophost.registry.loader import load_registry

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mb", type=int, default=200, help="MB of mail")
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    parser.add_argument("--name", default="bbk")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="coophost-bench-backup-"))
    root = tmp / args.name
    (root / "members").mkdir(parents=True)
    (root / "coop.yml").write_text(COOP.replace("bbk", args.name))
    (root / "members" / f"{SLUG}.yml").write_text(MEMBER)
    cli = [COOPHOST, "-i", str(root)]
    container = f"coophost-{args.name}-h1"
    try:
        run([*cli, "lab", "up", "--name", args.name, "--hosts", "1", "--backup-hosts", "1"])
        print("bench: deploying mail and backups (installs packages the first time)...",
              flush=True)
        run([*cli, "deploy"])
        loaded = load_registry(root)
        owner = loaded.registry.members[SLUG].owner
        home = f"/var/mail/units/{owner}"
        _, filled = run(["docker", "exec", container, "python3", "-c", FILL,
                         f"{home}/bench/cur", str(args.mb), "base"])
        files, data = map(int, filled.stdout.split())
        data_mb = data / 2**20
        address = server_address(loaded.registry.hosts["b1"])
        plain_repo = repo_url(address, "h1", owner).replace(owner, f"{owner}-plain")
        env = ["env",
               "BORG_RSH=ssh -i /etc/coophost/backup/id_ed25519 -o UserKnownHostsFile="
               "/etc/coophost/backup/known_hosts -o StrictHostKeyChecking=yes",
               f"BORG_PASSCOMMAND=cat /etc/coophost/backup/passphrases/{owner}",
               "BORG_BASE_DIR=/var/lib/coophost-backup/borg-plain"]
        run(["docker", "exec", container, *env, "borg", "init", "--encryption=repokey-blake2",
             plain_repo])
        rows = []

        def both(label: str, number: int) -> None:
            coop, _ = run([*cli, "backup", "run", "--json"])
            plain, _ = run(["docker", "exec", container, *env, "borg", "create",
                            "--compression", "zstd,3", "--numeric-ids",
                            f"{plain_repo}::plain-{number}", home])
            rows.append((label, coop, plain))

        both("first backup", 1)
        for number, percent in ((2, 1), (3, 10)):
            run(["docker", "exec", container, "python3", "-c", FILL, f"{home}/bench/new",
                 str(max(1, args.mb * percent // 100)), f"new{number}"])
            both(f"after {percent}% new mail", number)
        out = tmp / "restored"
        restore, done = run([*cli, "backup", "restore", SLUG, "mail", "--to", str(out),
                             "--json"])
        result = json.loads(done.stdout)
        print(f"\nmember data: {files} messages, {data_mb:.0f} MB, then 1% and 10% more")
        print(f"{'':24} {'coophost':>9} {'plain borg':>11} {'coophost/plain':>15}")
        for label, coop, plain in rows:
            print(f"{label:24} {coop:8.1f}s {plain:10.1f}s {coop / plain:14.2f}x")
        total = data_mb * 1.11
        print(f"restore to the controller, every file compared with the manifest: "
              f"{restore:.1f} s, {total / restore:.0f} MB/s ({result['files']} files, "
              f"{'identical' if result['ok'] else 'DIFFERENT: ' + result['detail']})")
        return 0
    finally:
        if not args.keep:
            subprocess.run([*cli, "lab", "down", "--name", args.name], capture_output=True,
                           check=False)


if __name__ == "__main__":
    sys.exit(main())
