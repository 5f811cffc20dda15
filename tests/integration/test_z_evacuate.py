"""A host is lost (`docker rm -f`); `host evacuate` brings its units back from backups.

The member's mail and Git repositories are back on other hosts with the content of the last
backup, byte for byte, the repository's history intact (`git fsck`), a Nextcloud's database
holds what it held at the backup (its dump loaded, checked and swapped in on the new host),
and the report says how old each unit's restored data is. Runs last (module order): it
destroys a lab host.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from coophost.backup.ops import units
from coophost.lab.lab import Lab
from coophost.registry.loader import load_registry
from tests.integration.conftest import LabInfo
from tests.integration.test_move import SEED
from tests.integration.test_restore import FAST_IMPORT, SUMS

pytestmark = pytest.mark.lab

GIT_MEMBER = "cycle-works"  # git in the sample co-op
REPO = "evacuated.git"
# A table written by the Nextcloud unit's own account into its database (bread-coop's, on h1
# with cycle-works' git in the sample co-op).
SEED_SQL = ("DROP TABLE IF EXISTS evacuation_probe;"
            "CREATE TABLE evacuation_probe (id integer PRIMARY KEY, note text);"
            "INSERT INTO evacuation_probe SELECT n, 'kept ' || n FROM generate_series(1, 250) n;")


def psql(the_lab: Lab, host: str, account: str, database: str, sql: str
         ) -> subprocess.CompletedProcess[bytes]:
    """psql as `account` (by peer) on `host`."""
    return on(the_lab, host, "runuser", "-u", account, "--", "psql", "-X", "-q", "-v",
              "ON_ERROR_STOP=1", "-At", "-d", database, "-c", sql)


def on(the_lab: Lab, host: str, *argv: str, stdin: bytes | None = None
       ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", "exec", "-i", the_lab.container(host), *argv], input=stdin,
                          capture_output=True, timeout=300, check=False)


def sums(the_lab: Lab, host: str, paths: tuple[str, ...]) -> dict[str, str]:
    done = on(the_lab, host, "python3", "-c", SUMS, *paths)
    assert done.returncode == 0, done.stderr
    found: dict[str, str] = json.loads(done.stdout)
    return found


def git_head(the_lab: Lab, host: str, repo: str) -> subprocess.CompletedProcess[bytes]:
    return on(the_lab, host, "runuser", "-u", f"g-{GIT_MEMBER}", "--", "git", "-C", repo,
              "rev-parse", "main")


def test_evacuating_a_destroyed_host_restores_its_units_from_backup(lab: LabInfo) -> None:
    the_lab = Lab(lab.name, lab.inventory)
    lab.cli("lab", "dns", "sync", "--name", lab.name, check=True)
    proc = lab.cli("deploy", "--json", timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = units(load_registry(lab.inventory))
    git = next(u for u in found if u.slug == GIT_MEMBER and u.service == "git")
    gone = git.host
    on_gone = [u for u in found if u.host == gone]
    # a repository of the member, made by its own account, and mail in a mail unit there
    repo = f"{git.paths[0]}/repositories/{REPO}"
    for argv in (["git", "init", "-q", "--bare", "-b", "main", repo],
                 ["git", "-C", repo, "fast-import", "--quiet"]):
        done = on(the_lab, gone, "runuser", "-u", f"g-{GIT_MEMBER}", "--", *argv,
                  stdin=FAST_IMPORT if "fast-import" in argv else None)
        assert done.returncode == 0, done.stderr
    head = git_head(the_lab, gone, repo).stdout.decode().strip()
    assert len(head) == 40
    mail = next((u for u in on_gone if u.service == "mail"), None)
    if mail is not None:
        maildir = f"{mail.paths[0]}/evacuation-test/Maildir"
        assert on(the_lab, gone, "python3", "-c", SEED, maildir, "evacuated", "12"
                  ).returncode == 0
        assert on(the_lab, gone, "chown", "-R", "vmail:vmail", mail.paths[0]).returncode == 0
    cloud = next((u for u in on_gone if u.service == "nextcloud"), None)
    assert cloud is not None, f"the sample co-op has a nextcloud unit on {gone}: {on_gone}"
    database, account = f"nextcloud_{cloud.owner}", f"nc-{cloud.slug}"
    seeded = psql(the_lab, gone, account, database, SEED_SQL)
    assert seeded.returncode == 0, seeded.stderr
    ran = lab.cli("backup", "run", "--host", gone, "--json", timeout=1800)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    before = {u.name: sums(the_lab, gone, u.paths) for u in on_gone}

    removed = subprocess.run(["docker", "rm", "-f", the_lab.container(gone)],
                             capture_output=True, text=True, check=False)
    assert removed.returncode == 0, removed.stderr
    proc = lab.cli("host", "evacuate", gone, "--yes", "--json", timeout=2400)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["ok"], proc.stdout + proc.stderr
    by_unit = {f"{u['member']}/{u['service']}": u for u in report["units"]}
    assert set(by_unit) >= {u.name for u in on_gone}, by_unit
    for unit in on_gone:
        row = by_unit[unit.name]
        assert row["ok"] and row["via"] == "backup" and row["to"] != gone, row
        assert row["archive"].startswith(f"{unit.service}-") and row["age_hours"] < 1, row
        after = sums(the_lab, row["to"], unit.paths)
        kept = sum(c["kept"] for c in row["copies"])  # made by the new host's deploy first
        differ = sorted(p for p, digest in before[unit.name].items() if after.get(p) != digest)
        assert len(differ) <= kept, (unit.name, differ[:5])
        if mail is not None and unit.name == mail.name:  # the unit seeded above
            messages = [p for p in before[unit.name] if "/evacuation-test/" in p]
            assert len(messages) == 12 and not set(messages) & set(differ)
    row = by_unit[cloud.name]  # its database is back, as its own account reads it
    assert [d["name"] for d in row["databases"]] == [database], row
    back = psql(the_lab, row["to"], account, database,
                "SELECT count(*), max(note) FROM evacuation_probe")
    assert back.stdout.decode().strip() == "250|kept 99", back
    new_git = by_unit[git.name]["to"]
    assert git_head(the_lab, new_git, repo).stdout.decode().strip() == head
    fsck = on(the_lab, new_git, "runuser", "-u", f"g-{GIT_MEMBER}", "--", "git", "-C", repo,
              "fsck", "--full")
    assert fsck.returncode == 0, fsck.stderr
    placed = load_registry(lab.inventory).registry.members
    assert all(gone not in m.placement.values() for m in placed.values())
    # the dead host can go now: nothing is placed or applied on it any more
    lab.cli("host", "remove", gone, check=True)
