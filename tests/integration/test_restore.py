"""Backups proven by restoring, on real lab hosts: borg repositories on the backup host b1.

Mail and a Git repository of members on one service host are backed up, damaged and restored
byte for byte (SHA-256 of every file); a drill restores each unit's latest archive and compares
it with the manifest the archive carries; a service host's append-only key can neither delete
its own history (a delete only hides archives, which `backup rollback` brings back) nor reach
another host's repositories; no passphrase is on the backup host; a flipped byte in a
repository segment fails the drill naming the unit; a backup killed midway leaves a repository
the next run completes. Runs after the deploy tests (module order): the lab is deployed here
again, which changes nothing when they ran.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coophost.backup.model import repo_path, repo_url, server_address
from coophost.backup.ops import Unit, units
from coophost.backup.render import passphrase
from coophost.lab.lab import Lab
from coophost.registry.loader import load_registry
from coophost.secrets import SecretStore
from tests.integration.conftest import LabInfo

pytestmark = pytest.mark.lab

GIT_MEMBER = "cycle-works"  # git in the sample co-op
SEEDED = "restore-test"  # the folder of the seeded mail, in the mail unit's data
SUMS = textwrap.dedent("""
    import hashlib, json, os, sys
    out = {}
    for top in sys.argv[1:]:
        for folder, dirs, files in os.walk(top):
            for name in files:
                path = os.path.join(folder, name)
                if os.path.islink(path):
                    out[path] = "L" + os.readlink(path)
                else:
                    out[path] = hashlib.sha256(open(path, "rb").read()).hexdigest()
            for name in dirs:
                path = os.path.join(folder, name)
                if os.path.islink(path):
                    out[path] = "L" + os.readlink(path)
    print(json.dumps(out))
""")
SEED_MAIL = textwrap.dedent("""
    import os, random, sys
    home = sys.argv[1]
    rng = random.Random(13)
    for folder, count in (("Maildir", 30), ("Maildir/.Archive", 10)):
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(home, folder, sub), exist_ok=True)
        for i in range(count):
            body = b"Subject: message %d\\r\\n\\r\\n" % i + rng.randbytes(rng.randint(200, 40000))
            name = f"{1700000000 + i}.M{i}P1.h1:2,S"
            with open(os.path.join(home, folder, "cur", name), "wb") as f:
                f.write(body)
    if not os.path.lexists(os.path.join(home, "latest")):  # (a reused lab has it)
        os.symlink("Maildir/cur", os.path.join(home, "latest"))
    with open(os.path.join(home, "name with spaces.txt"), "wb") as f:
        f.write(rng.randbytes(1000))
""")
FAST_IMPORT = b"""\
blob
mark :1
data 11
first file

commit refs/heads/main
mark :2
committer Restore Test <rt@lab.test> 1700000000 +0000
data 6
first
M 100644 :1 README

blob
mark :3
data 2048
""" + bytes(range(256)) * 8 + b"""
commit refs/heads/main
mark :4
committer Restore Test <rt@lab.test> 1700000100 +0000
data 7
second
from :2
M 100644 :3 data.bin

"""


@dataclass
class BackupLab:
    """The deployed lab, the mail and git units backed up here, and helpers."""

    info: LabInfo
    lab: Lab
    mail: Unit
    git: Unit

    def container(self, host: str) -> str:
        return self.lab.container(host)

    def on(self, host: str, *argv: str, stdin: bytes | None = None, timeout: float = 300
           ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["docker", "exec", "-i", self.container(host), *argv],
                              input=stdin, capture_output=True, timeout=timeout, check=False)

    def sums(self, unit: Unit) -> dict[str, str]:
        done = self.on(unit.host, "python3", "-c", SUMS, *unit.paths)
        assert done.returncode == 0, done.stderr
        found: dict[str, str] = json.loads(done.stdout)
        return found

    def cli_json(self, *args: str, expect: int | None = 0, timeout: float = 900
                 ) -> dict[str, Any]:
        proc = self.info.cli(*args, "--json", timeout=timeout)
        if expect is not None:
            assert proc.returncode == expect, (args, proc.stdout, proc.stderr)
        data: dict[str, Any] = json.loads(proc.stdout)
        return data

    def host_borg(self, unit: Unit, *args: str, repo_host: str | None = None
                  ) -> subprocess.CompletedProcess[bytes]:
        """borg on the unit's service host with that host's own (append-only) key."""
        registry = load_registry(self.info.inventory).registry
        url = repo_url(server_address(registry.hosts["b1"]), repo_host or unit.host, unit.owner)
        env = [
            "BORG_RSH=ssh -i /etc/coophost/backup/id_ed25519 -o UserKnownHostsFile="
            "/etc/coophost/backup/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes",
            f"BORG_PASSCOMMAND=cat /etc/coophost/backup/passphrases/{unit.owner}",
            "BORG_BASE_DIR=/var/lib/coophost-backup/borg",
        ]
        words = [a.replace("REPO", url) for a in args]
        return self.on(unit.host, "env", *env, "borg", *words)

    def archives(self, unit: Unit) -> dict[str, Any]:
        rows = self.cli_json("backup", "list", "--member", unit.slug, expect=None)["units"]
        return next(r for r in rows if r["service"] == unit.service)


@pytest.fixture(scope="module")
def bk(lab: LabInfo) -> BackupLab:
    lab.cli("lab", "dns", "sync", "--name", lab.name, check=True)
    proc = lab.cli("deploy", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    loaded = load_registry(lab.inventory)
    found = units(loaded)
    git = next(u for u in found if u.slug == GIT_MEMBER and u.service == "git")
    mail = next((u for u in found if u.service == "mail" and u.host == git.host), None) \
        or next(u for u in found if u.service == "mail")
    info = BackupLab(lab, Lab(lab.name, lab.inventory), mail, git)
    # a member's mail: messages (binary bodies), a folder, a symlink, a name with spaces (in
    # a folder of their own: the unit may hold mail the modules before this one delivered)
    home = f"{mail.paths[0]}/{SEEDED}"
    seeded = info.on(mail.host, "python3", "-c", SEED_MAIL, home)
    assert seeded.returncode == 0, seeded.stderr
    assert info.on(mail.host, "chown", "-R", "vmail:vmail", home).returncode == 0
    # a Git repository of the member, made by its own account
    account = f"g-{git.slug}"
    repo = f"{git.paths[0]}/repositories/restore-test.git"
    for argv in (["git", "init", "-q", "--bare", "-b", "main", repo],
                 ["git", "-C", repo, "fast-import", "--quiet"]):
        done = info.on(git.host, "runuser", "-u", account, "--", *argv,
                       stdin=FAST_IMPORT if "fast-import" in argv else None)
        assert done.returncode == 0, done.stderr
    return info


def drilled_ok(bk: BackupLab, unit: Unit) -> bool:
    """Whether a drill of the member passes for `unit` (its other units may have no backup)."""
    result = bk.cli_json("backup", "drill", "--member", unit.slug, expect=None)
    row = next(r for r in result["units"] if r["service"] == unit.service)
    return bool(row["ok"])


def head(bk: BackupLab) -> str:
    done = bk.on(bk.git.host, "runuser", "-u", f"g-{bk.git.slug}", "--", "git", "-C",
                 f"{bk.git.paths[0]}/repositories/restore-test.git", "rev-parse", "main")
    return done.stdout.decode().strip()


def test_restore_brings_back_every_file_byte_for_byte(bk: BackupLab) -> None:
    before = {u: bk.sums(u) for u in (bk.mail, bk.git)}
    commit = head(bk)
    assert len(commit) == 40
    home = f"{bk.mail.paths[0]}/{SEEDED}"
    assert sum(1 for p in before[bk.mail] if p.startswith(f"{home}/Maildir/")) == 40
    ran = bk.cli_json("backup", "run", "--host", bk.mail.host)
    made = [a for h in ran["hosts"] for a in h["archives"]]
    assert {(a["owner"], a["service"]) for a in made} >= {(bk.mail.owner, "mail"),
                                                         (bk.git.owner, "git")}, made
    assert all(a["ok"] for a in made), made
    # damage: messages deleted, a folder deleted, a message changed, a repository deleted
    cur = sorted(p for p in before[bk.mail] if p.startswith(f"{home}/Maildir/cur/"))
    assert bk.on(bk.mail.host, "rm", "-f", *cur[:5]).returncode == 0
    assert bk.on(bk.mail.host, "rm", "-rf", f"{home}/Maildir/.Archive").returncode == 0
    assert bk.on(bk.mail.host, "sh", "-c", f"echo changed > '{cur[6]}'").returncode == 0
    gone = f"{bk.git.paths[0]}/repositories/restore-test.git"
    assert bk.on(bk.git.host, "rm", "-rf", gone).returncode == 0
    assert bk.sums(bk.mail) != before[bk.mail] and bk.sums(bk.git) != before[bk.git]

    for unit in (bk.mail, bk.git):
        result = bk.cli_json("backup", "restore", unit.slug, unit.service)
        assert result["ok"], result
        # what was there is kept in the service's archive folder, not lost
        for kept in result["previous_data"]:
            assert bk.on(unit.host, "test", "-d", kept).returncode == 0, kept
        assert bk.sums(unit) == before[unit], unit.name
    assert head(bk) == commit
    fsck = bk.on(bk.git.host, "runuser", "-u", f"g-{bk.git.slug}", "--", "git", "-C", gone,
                 "fsck", "--full", "--strict")
    assert fsck.returncode == 0, fsck.stderr
    owner = bk.on(bk.mail.host, "stat", "-c", "%U", f"{home}/Maildir/.Archive/cur")
    assert bk.on(bk.mail.host, "test", "-L", f"{home}/latest").returncode == 0
    assert owner.stdout.decode().strip() == "vmail"


def test_drill_restores_and_compares_every_file_and_list_shows_it(bk: BackupLab) -> None:
    result = bk.cli_json("backup", "drill", "--member", bk.mail.slug)
    rows = {r["service"]: r for r in result["units"]}
    assert rows["mail"]["ok"] and rows["mail"]["files"] >= 42, rows
    assert "files identical" in rows["mail"]["detail"]
    listed = bk.archives(bk.mail)
    assert listed["drill"]["ok"] and listed["drill"]["archive"] == rows["mail"]["archive"]
    assert listed["fresh"] and listed["archives"] >= 1
    # the member sees its own backups and drill in its shell (state.db; no host contacted)
    shown = bk.info.cli("member-shell", bk.mail.slug,
                        env={"SSH_ORIGINAL_COMMAND": "backups --json"})
    assert shown.returncode == 0, shown.stderr
    mine = {r["service"]: r for r in json.loads(shown.stdout)}
    assert mine["mail"]["archives"] >= 1 and mine["mail"]["last_drill"]["ok"], mine
    assert mine["mail"]["last"] == listed["last"]
    member = load_registry(bk.info.inventory).registry.members[bk.mail.slug]
    assert set(mine) == set(member.services)  # its own services, nobody else's


def test_restore_to_another_host_sets_a_checked_copy_aside_for_root_alone(
        bk: BackupLab) -> None:
    unit = bk.git
    hosts = load_registry(bk.info.inventory).registry.hosts
    other = next(h for h in sorted(hosts) if h not in (unit.host, "b1"))
    before = bk.sums(unit)
    result = bk.cli_json("backup", "restore", unit.slug, "git", "--to-host", other)
    assert result["ok"], result
    target = result["to"].split(":", 1)[1]
    assert result["to"] == f"{other}:/var/lib/coophost-restore/{unit.owner}.git." \
                           f"{result['archive']}"
    mode = bk.on(other, "stat", "-c", "%a %U", "/var/lib/coophost-restore", target)
    assert mode.stdout.decode().split("\n")[:2] == ["700 root", "700 root"], mode.stdout
    # every file of the unit, byte for byte, with its owner, on the other host
    copied = json.loads(bk.on(other, "python3", "-c", SUMS,
                              *[f"{target}{p}" for p in unit.paths]).stdout)
    assert {k[len(target):]: v for k, v in copied.items()} == before
    repo = f"{unit.paths[0]}/repositories/restore-test.git"
    owners = [bk.on(h, "stat", "-c", "%u", f"{root}{repo}/HEAD").stdout
              for h, root in ((unit.host, ""), (other, target))]
    assert owners[0] == owners[1], owners
    fsck = bk.on(other, "git", "-c", "safe.directory=*", "-C", f"{target}{repo}", "fsck",
                 "--full", "--strict")
    assert fsck.returncode == 0, fsck.stderr
    assert bk.sums(unit) == before  # the unit's own host served on, untouched
    # the same archive again: refused, the copy there is left as it is
    again = bk.info.cli("backup", "restore", unit.slug, "git", "--to-host", other,
                        "--archive", result["archive"])
    assert again.returncode == 2 and "exists already" in again.stderr, again.stderr
    wrong = bk.info.cli("backup", "restore", unit.slug, "git", "--to-host", other + "x")
    assert wrong.returncode == 2 and f"did you mean '{other}'" in wrong.stderr, wrong.stderr
    assert bk.on(other, "rm", "-rf", target).returncode == 0


def test_a_merge_refuses_a_folder_that_links_out_of_the_unit(bk: BackupLab,
                                                             tmp_path: Path) -> None:
    from coophost.layout import KNOWN_HOSTS_FILE
    from coophost.members.carry import CopyReport, local_sums, merge_into, push_local
    from coophost.registry.hosts import connections
    from coophost.ssh import connect

    host = bk.mail.host
    unit = "/var/tmp/coophost-link-test"
    assert bk.on(host, "sh", "-c", f"rm -rf {unit} && mkdir -p {unit} && "
                 f"ln -s /etc {unit}/cur").returncode == 0
    source = tmp_path / "source"
    (source / "cur").mkdir(parents=True)
    (source / "cur" / "coophost-escaped").write_text("a file that must not reach /etc\n")
    loaded = load_registry(bk.info.inventory)
    copy = CopyReport(unit)
    try:
        with connect(connections(loaded.registry.hosts)[host],
                     bk.info.inventory / KNOWN_HOSTS_FILE) as client:
            merge_into(client, unit, host, local_sums(source),
                       lambda into: push_local(source, client, into), copy)
        assert copy.problems and "link to a folder" in copy.problems[0], copy
        assert bk.on(host, "test", "-e", "/etc/coophost-escaped").returncode == 1
    finally:
        bk.on(host, "rm", "-rf", unit, "/etc/coophost-escaped")


def test_backup_list_exits_1_when_a_backup_is_older_than_coop_yml_allows(
        bk: BackupLab) -> None:
    assert bk.info.cli("backup", "list", "--member", bk.mail.slug).returncode == 0
    coop = bk.info.inventory / "coop.yml"
    text = coop.read_text()
    assert "retention:\n" in text
    try:
        coop.write_text(text.replace("retention:\n", "retention:\n  backup_max_age_hours: 0\n"))
        proc = bk.info.cli("backup", "list", "--member", bk.mail.slug, "--json")
        rows = json.loads(proc.stdout)["units"]
        assert proc.returncode == 1 and rows and not any(r["fresh"] for r in rows), rows
    finally:
        coop.write_text(text)


def test_the_passphrase_is_nowhere_on_the_backup_host(bk: BackupLab) -> None:
    loaded = load_registry(bk.info.inventory)
    store = SecretStore(bk.info.inventory, loaded.registry.coop.vault, loaded.catalogue)
    values = [store.value(passphrase(m.owner)) for m in loaded.registry.members.values()]
    patterns = [w for v in values for w in ("-e", v)]
    searched = ["/etc", "/srv", "/var", "/root", "/home", "/tmp", "/run", "/opt", "/usr/local"]
    found = bk.on("b1", "grep", "-rlF", *patterns, *searched)
    assert found.returncode == 1, found.stdout.decode()  # 1: no line matched anywhere
    # the same search finds it where it must be: on the service host, root only
    control = bk.on(bk.mail.host, "grep", "-rlF", *patterns, "/etc/coophost/backup")
    assert control.returncode == 0 and b"passphrases/" in control.stdout


def test_a_service_host_key_can_neither_delete_history_nor_reach_another_host(
        bk: BackupLab) -> None:
    unit = bk.git
    before = bk.archives(unit)
    assert before["archives"] >= 1 and not before["vanished"]
    other = next(h for h in ("h1", "h2", "h3") if h != unit.host)
    refused = bk.host_borg(unit, "list", "REPO", repo_host=other)
    assert refused.returncode != 0 and b"not allowed" in refused.stderr, refused.stderr
    # prune and delete with the host's own key: borg says done, the data stays (append-only)
    pruned = bk.host_borg(unit, "prune", "--keep-last", "1", "--glob-archives", "git-*", "REPO")
    assert pruned.returncode == 0, pruned.stderr
    names = bk.host_borg(unit, "list", "--short", "REPO").stdout.decode().split()
    for name in names:
        assert bk.host_borg(unit, "delete", f"REPO::{name}").returncode == 0
    hidden = bk.info.cli("backup", "list", "--member", unit.slug, "--json")
    row = next(r for r in json.loads(hidden.stdout)["units"] if r["service"] == "git")
    assert hidden.returncode == 1 and len(row["vanished"]) == before["archives"], row
    assert "backup rollback" in row["error"]
    # pruning now (the controller's key really deletes) would make the deletion final: refused
    refused_prune = bk.cli_json("backup", "prune", "--member", unit.slug, expect=1)
    git_row = next(r for r in refused_prune["units"] if r["service"] == "git")
    assert not git_row["ok"] and "rollback" in git_row["error"], git_row
    back = bk.cli_json("backup", "rollback", unit.slug, "git")
    assert back["ok"] and back["rolled_back"], back
    after = bk.archives(unit)
    assert after["archives"] == before["archives"] and not after["vanished"], after
    # the rolled-back repository restores, and the host backs up into it again
    assert drilled_ok(bk, unit)
    again = bk.cli_json("backup", "run", "--member", unit.slug, "--host", unit.host)
    assert all(h["ok"] for h in again["hosts"]), again


def test_prune_follows_retention_and_keeps_the_last_archive(bk: BackupLab) -> None:
    unit = bk.git
    bk.cli_json("backup", "run", "--member", unit.slug, "--host", unit.host)
    before = bk.archives(unit)
    assert before["archives"] >= 2, before
    kept = bk.cli_json("backup", "prune", "--member", unit.slug)  # 7 days: nothing is old
    assert all(not r["pruned"] for r in kept["units"]), kept
    coop = bk.info.inventory / "coop.yml"
    text = coop.read_text()
    try:
        coop.write_text(text.replace("backups_days: 7", "backups_days: 0"))
        pruned = bk.cli_json("backup", "prune", "--member", unit.slug)
    finally:
        coop.write_text(text)
    row = next(r for r in pruned["units"] if r["service"] == "git")
    assert len(row["pruned"]) == before["archives"] - 1 and row["kept"] == 1, row
    after = bk.archives(unit)
    assert after["archives"] == 1 and after["last"] == before["last"], after
    assert not after["vanished"], after  # what coophost pruned is not taken for tampering
    assert drilled_ok(bk, unit)


def test_a_flipped_byte_in_a_segment_fails_the_drill_naming_the_unit(bk: BackupLab) -> None:
    unit = bk.mail
    folder = f"/srv/borg/repos/{repo_path(unit.host, unit.owner).split('/repos/')[1]}/data"
    flip = textwrap.dedent("""
        import os, sys
        files = [os.path.join(d, f) for d, _, fs in os.walk(sys.argv[1]) for f in fs]
        path = max(files, key=os.path.getsize)
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0xFF]))
        print(path)
    """)
    done = bk.on("b1", "python3", "-c", flip, folder)
    assert done.returncode == 0, done.stderr
    proc = bk.info.cli("backup", "drill", "--member", unit.slug)
    assert proc.returncode == 1, proc.stdout
    failed = [line for line in proc.stdout.splitlines() if "FAILED" in line]
    assert failed and all(f"{unit.slug}/mail" in line for line in failed), proc.stdout
    # flipped back, the same drill passes: it was that byte
    assert bk.on("b1", "python3", "-c", flip, folder).returncode == 0
    assert bk.info.cli("backup", "drill", "--member", unit.slug).returncode == 0


def test_a_backup_killed_midway_leaves_a_repository_the_next_run_completes(
        bk: BackupLab) -> None:
    unit = bk.mail
    big = f"{unit.paths[0]}/big.bin"
    made = bk.on(unit.host, "python3", "-c",
                 f"import os; open({big!r}, 'wb').write(os.urandom(200 * 2**20))")
    assert made.returncode == 0, made.stderr
    try:
        run = subprocess.Popen(["docker", "exec", bk.container(unit.host),
                                "/usr/local/sbin/coophost-backup", "create",
                                "--owner", unit.owner], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        killed = False
        while not killed and time.monotonic() < deadline and run.poll() is None:
            # once borg has been sending data for a second, SIGKILL it
            if bk.on(unit.host, "pgrep", "-f", "borg create").returncode == 0:
                time.sleep(1.0)
                killed = bk.on(unit.host, "pkill", "-9", "-f", "borg create").returncode == 0
            else:
                time.sleep(0.2)
        out, _err = run.communicate(timeout=120)
        assert killed, "borg create was not running to be killed"
        report = [json.loads(line) for line in out.splitlines() if line.startswith(b"{")]
        assert report and not any(r.get("ok") for r in report), report
        again = bk.cli_json("backup", "run", "--member", unit.slug, "--host", unit.host)
        assert all(h["ok"] for h in again["hosts"]), again
        drilled = bk.cli_json("backup", "drill", "--member", unit.slug)
        row = next(r for r in drilled["units"] if r["service"] == "mail")
        assert row["ok"], row
    finally:
        bk.on(unit.host, "rm", "-f", big)


def test_a_handover_gives_the_member_repositories_it_can_open_alone(
        bk: BackupLab, tmp_path: Path) -> None:
    from coophost.backup.model import compare, manifest_path, parse_manifest
    from coophost.backup.ops import scan

    ran = bk.cli_json("backup", "run", "--member", bk.mail.slug)  # the seeded mail in the last
    assert all(a["ok"] for h in ran["hosts"] for a in h["archives"]), ran
    out = tmp_path / "handover"
    data = bk.cli_json("backup", "handover", bk.mail.slug, "--out", str(out))
    repos = {r["host"]: r for r in data["repositories"]}
    assert bk.mail.host in repos and all(not r["error"] for r in repos.values()), repos
    assert {p.name for p in out.iterdir()} >= {"passphrase", "README.txt",
                                               repos[bk.mail.host]["tarball"]}
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in out.iterdir())
    assert (out / repos[bk.mail.host]["key"]).read_text().startswith("BORG_KEY ")
    # on "the member's machine": a borg home of its own, the passphrase file, nothing else
    home = tmp_path / "member"
    home.mkdir()
    subprocess.run(["tar", "-xf", str(out / repos[bk.mail.host]["tarball"]), "-C", str(home)],
                   check=True)
    env = {"PATH": "/usr/bin:/bin", "BORG_BASE_DIR": str(home / ".borg"), "LANG": "C.UTF-8",
           "BORG_PASSPHRASE": (out / "passphrase").read_text().strip()}
    repo = str(home / bk.mail.owner)
    listed = subprocess.run(["borg", "list", "--json", repo], env=env, capture_output=True,
                            text=True, check=False)
    assert listed.returncode == 0, listed.stderr
    names = [a["archive"] for a in json.loads(listed.stdout)["archives"]
             if a["archive"].startswith("mail-")]
    assert names and repos[bk.mail.host]["archives"] >= len(names)
    restored = tmp_path / "restored"
    restored.mkdir()
    done = subprocess.run(["borg", "extract", f"{repo}::{names[-1]}"], env=env, cwd=restored,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    manifest = parse_manifest(
        (restored / manifest_path(bk.mail.owner, "mail").lstrip("/")).read_text())
    diff = compare(manifest, scan(restored, list(bk.mail.paths)))
    assert diff.ok and len(manifest) > 40, diff.summary()
    wrong = subprocess.run(["borg", "list", repo], env={**env, "BORG_PASSPHRASE": "wrong"},
                           capture_output=True, text=True, check=False)
    assert wrong.returncode != 0  # the copy is still encrypted: the passphrase is the key
