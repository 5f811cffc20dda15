"""Backups pushed from a service host to a backup host, as coophost sets them up.

The client (group `client`) runs coophost-backup; the tests act as the controller from the
client with the admin key prepare.yml put in /root/mol-admin-key (borg over the same borg
sshd, pinned the same way). The backup host (group `backup`) is reached by its group too.
"""

import json
import os
import re
import shlex
import time
from pathlib import Path

import pytest
import testinfra
import yaml

# The client's instance, by its inventory group (its name carries $COOPHOST_MOLECULE_TAG).
testinfra_hosts = ["client"]

CONVERGE = yaml.safe_load((Path(__file__).resolve().parents[1] / "converge.yml").read_text())
UNITS = {unit["owner"]: unit for play in CONVERGE if play["hosts"] == "client"
         for unit in play["vars"]["backup_units"]}
PASSPHRASES = {owner: unit["passphrase"] for owner, unit in UNITS.items()}

CONFIG = "/etc/coophost/backup"
ALPHA = "/var/mail/units/alpha.1"
SERVER = "ssh://borg@backup.mol.test:2222"
REPOS = f"{SERVER}/srv/borg/repos/client"
ADMIN_KEY = "/root/mol-admin-key"
SSH_OPTIONS = (f"-o UserKnownHostsFile={CONFIG}/known_hosts -o StrictHostKeyChecking=yes "
               "-o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=20")
# As coophost-backup calls borg (files/coophost-backup: borg_env), and as the controller does
# (coophost/backup/ops.py) with its own key. Each has its own borg cache folder here.
CLIENT_RSH = f"ssh -i {CONFIG}/id_ed25519 {SSH_OPTIONS}"
ADMIN_RSH = f"ssh -i {ADMIN_KEY} {SSH_OPTIONS}"

# A tree as {relative path: sha256 of a regular file, or "L<target>" for a symlink}.
TREE = """
import hashlib, json, os, sys
top = sys.argv[1]
found = {}
for folder, dirs, files in os.walk(top):
    for name in dirs + files:
        path = os.path.join(folder, name)
        if os.path.islink(path):
            found[path[len(top):]] = "L" + os.readlink(path)
        elif os.path.isfile(path):
            with open(path, "rb") as handle:
                found[path[len(top):]] = hashlib.sha256(handle.read()).hexdigest()
print(json.dumps(found, sort_keys=True))
"""


def q(text):
    return shlex.quote(text)


def as_client(owner, command):
    """`command` (borg ...) with the client's key and passphrase file, as coophost-backup has."""
    passcommand = f"cat {CONFIG}/passphrases/{owner}"
    return (f"env BORG_RSH={q(CLIENT_RSH)} BORG_PASSCOMMAND={q(passcommand)}"
            f" BORG_BASE_DIR=/root/mol-client-borg {command}")


def as_admin(owner, command):
    """`command` (borg ...) with the controller's key and the member life's passphrase."""
    return (f"env BORG_RSH={q(ADMIN_RSH)} BORG_PASSPHRASE={q(PASSPHRASES[owner])}"
            f" BORG_BASE_DIR=/root/mol-admin-borg {command}")


def archives(host, owner):
    """The archive names of `owner`'s repository, as the controller lists them."""
    out = host.check_output(as_admin(owner, f"borg list --json {REPOS}/{owner}"))
    return sorted(archive["name"] for archive in json.loads(out)["archives"])


def tree(host, top):
    return json.loads(host.check_output("python3 -c %s %s", TREE, top))


def parse_manifest(text):
    """{path: sha256 or L<target>} from a manifest's lines (`<value>  <size> <mtime>  <path>`)."""
    entries = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            value, _meta, path = line.split("  ", 2)
            entries[path] = value
    return entries


@pytest.fixture(scope="module")
def backup():
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_hosts(["backup"], connection="ansible", ansible_inventory=inventory)[0]


@pytest.fixture(scope="module")
def runs(host):
    """Two runs of `coophost-backup create`, as the timer or `coophost backup run` start it."""
    results = []
    for _ in range(2):
        results.append(host.run("/usr/local/sbin/coophost-backup create"))
        time.sleep(1.1)  # archive names are to the second
    return results


# The backup host: its borg sshd, and the host's own sshd left alone.

def test_the_borg_sshd_listens_on_2222(backup):
    assert backup.service("coophost-borg-sshd.service").is_enabled
    assert backup.service("coophost-borg-sshd.service").is_running
    assert backup.socket("tcp://0.0.0.0:2222").is_listening


def test_the_hosts_own_sshd_is_unchanged(backup):
    recorded_sum, recorded_pid = backup.file("/root/mol-sshd-before").content_string.split()
    assert backup.check_output("sha256sum /etc/ssh/sshd_config").split()[0] == recorded_sum
    # Not restarted either: the same process as before the role ran.
    assert backup.check_output("systemctl show --property=MainPID --value ssh.service") \
        == recorded_pid
    assert backup.socket("tcp://0.0.0.0:22").is_listening
    config = backup.check_output("sshd -T")
    assert "port 22" in config.splitlines()
    assert "allowusers" not in config and "2222" not in config


def test_the_borg_accounts_keys_are_root_owned(backup):
    keys = backup.file("/etc/coophost/borg-sshd/authorized_keys")
    assert keys.user == "root" and keys.mode == 0o644
    assert backup.file("/etc/coophost/borg-sshd/ssh_host_ed25519_key").mode == 0o600
    assert backup.user("borg").password == "*"


# The client: keys, passphrases, the timer.

def test_passphrase_files_are_root_only(host):
    for owner, passphrase in PASSPHRASES.items():
        f = host.file(f"{CONFIG}/passphrases/{owner}")
        assert (f.user, f.group, f.mode) == ("root", "root", 0o600)
        assert f.content_string == passphrase
    assert host.file(f"{CONFIG}/id_ed25519").mode == 0o600
    units = host.file(f"{CONFIG}/units.json")
    assert units.mode == 0o600
    assert not any(p in units.content_string for p in PASSPHRASES.values())


def test_the_daily_timer_is_enabled_and_active(host):
    timer = host.service("coophost-backup.timer")
    assert timer.is_enabled and timer.is_running
    assert "OnCalendar=*-*-* 02:15:00" in host.file(
        "/etc/systemd/system/coophost-backup.timer").content_string


# Backups.

def test_create_prints_one_ok_line_per_unit(runs):
    for result in runs:
        assert result.rc == 0, result.stderr
        reports = [json.loads(line) for line in result.stdout.splitlines()]
        assert [(r["owner"], r["service"], r["repo"]) for r in reports] == [
            ("alpha.1", "mail", f"{REPOS}/alpha.1"), ("beta.2", "mail", f"{REPOS}/beta.2"),
            ("gamma.3", "cloud", f"{REPOS}/gamma.3")]
        assert all(r["ok"] is True and r["warning"] is False for r in reports), reports
        # alpha.1: four regular files and a symlink; beta.2: one message; gamma.3: its file
        # and its database's dump.
        assert [r["files"] for r in reports] == [5, 1, 2]


def test_a_second_run_makes_a_second_archive(host, runs):
    first, second = (json.loads(run.stdout.splitlines()[0]) for run in runs)  # alpha.1's
    names = [first["archive"], second["archive"]]
    assert archives(host, "alpha.1") == names
    assert names[0] != names[1] and all(re.match(r"^mail-\d{4}-", n) for n in names)
    assert len(archives(host, "beta.2")) == 2
    # Unchanged data is deduplicated: the second archive of alpha.1 adds almost nothing.
    assert first["original_size"] > 3 * 2**20 and first["deduplicated_size"] > 3 * 2**20
    assert second["deduplicated_size"] < 2**16


def test_the_repositories_are_encrypted_with_the_passphrase(host, runs):
    info = json.loads(host.check_output(as_admin("alpha.1", f"borg info --json {REPOS}/alpha.1")))
    assert info["encryption"]["mode"] == "repokey-blake2"
    wrong = host.run(f"env BORG_RSH={q(ADMIN_RSH)} BORG_PASSPHRASE=wrong "
                     f"BORG_BASE_DIR=/root/mol-admin-borg borg list {REPOS}/alpha.1")
    assert wrong.rc != 0 and "passphrase" in wrong.stderr.lower()
    # One member life's passphrase does not open another's repository.
    other = host.run(f"env BORG_RSH={q(ADMIN_RSH)} BORG_PASSPHRASE={q(PASSPHRASES['beta.2'])} "
                     f"BORG_BASE_DIR=/root/mol-admin-borg borg list {REPOS}/alpha.1")
    assert other.rc != 0


def test_the_latest_archive_extracts_to_the_original_bytes_and_its_manifest(host, runs):
    latest = archives(host, "alpha.1")[-1]
    target = "/root/mol-extract"
    host.check_output(f"rm -rf {target} && mkdir -p {target} && cd {target} && "
                      + as_admin("alpha.1", f"borg extract {REPOS}/alpha.1::{latest}"))
    original = tree(host, ALPHA)
    assert len(original) == 5 and "/notes 2026.txt" in original and "/latest" in original
    assert original["/latest"] == "Lcur/1700000000.M1P1.mol:2,S"
    assert tree(host, target + ALPHA) == original
    manifest = UNITS["alpha.1"]["manifest"]
    entries = parse_manifest(host.file(target + manifest).content_string)
    assert entries == {ALPHA + path: value for path, value in original.items()}
    # Only the unit's data and its manifest are in the archive.
    listed = host.check_output(as_admin("alpha.1", f"borg list --format '{{path}}{{NL}}' "
                                                   f"{REPOS}/alpha.1::{latest}")).splitlines()
    assert {"/" + p for p in listed} == (
        {ALPHA, ALPHA + "/cur", manifest} | {ALPHA + path for path in original})


def segments(backup, repo_dir):
    """{segment file: sha256} of a repository on the backup host."""
    out = backup.check_output(f"cd {repo_dir} && find data -type f -exec sha256sum {{}} +")
    return {line.split()[1]: line.split()[0] for line in out.splitlines()}


def test_the_clients_key_cannot_delete_an_archives_data(host, backup, runs):
    """Append-only (borg 1.2): the client's `borg delete` exits 0 and the archive is gone from
    listings, but only a transaction was appended and no byte already written changed; the
    role's coophost-borg-rollback on the backup host takes that transaction back and the archive
    is there again, whole (the later segments are moved to the quarantine, not deleted).
    """
    repo_dir = "/srv/borg/repos/client/alpha.1"
    before = archives(host, "alpha.1")
    known = json.loads(backup.check_output(
        f"/usr/local/sbin/coophost-borg-rollback transactions {repo_dir}"))
    last_good = known[-1]["id"]
    kept = segments(backup, repo_dir)
    deleted = host.run(as_client("alpha.1", f"borg delete {REPOS}/alpha.1::{before[0]}"))
    assert deleted.rc == 0, deleted.stderr
    assert archives(host, "alpha.1") == before[1:]  # hidden from listings...
    after = segments(backup, repo_dir)
    assert {path: after.get(path) for path in kept} == kept  # ...but nothing removed or changed
    appended = sorted(int(path.rsplit("/", 1)[1]) for path in set(after) - set(kept))
    assert appended and min(appended) > last_good
    rolled = json.loads(backup.check_output(
        f"/usr/local/sbin/coophost-borg-rollback to {repo_dir} {last_good}"))
    assert sorted(rolled["moved_segments"]) == appended
    assert sorted(int(n) for n in backup.file(rolled["quarantine"]).listdir() if n.isdigit()) \
        == appended
    # The controller's cache and last-seen manifest time are newer than the rolled-back
    # repository (borg refuses it: that is how an unannounced rollback shows): forget them.
    host.check_output("rm -rf /root/mol-admin-borg")
    assert archives(host, "alpha.1") == before
    check = host.run(as_admin("alpha.1", f"borg check {REPOS}/alpha.1"))
    assert check.rc == 0, check.stderr
    dry = host.run(as_admin("alpha.1", f"borg extract --dry-run {REPOS}/alpha.1::{before[0]}"))
    assert dry.rc == 0, dry.stderr


@pytest.mark.parametrize("path", ["/srv/borg/repos/other/x", "/srv/borg/repos/client-x/y",
                                  "/srv/borg/repos/client/../other/z", "/srv/borg/repos"])
def test_the_clients_key_is_confined_to_its_folder(host, backup, runs, path):
    made = host.run(as_client("alpha.1", f"borg init --encryption=repokey-blake2 "
                                         f"--make-parent-dirs {SERVER}{path}"))
    assert made.rc != 0
    assert "not allowed" in made.stderr.lower() or "PathNotAllowed" in made.stderr, made.stderr
    listed = host.run(as_client("alpha.1", f"borg list {SERVER}{path}"))
    assert listed.rc != 0
    assert sorted(backup.file("/srv/borg/repos").listdir()) == ["client"]
    assert sorted(backup.file("/srv/borg/repos/client").listdir()) == [
        "alpha.1", "beta.2", "gamma.3"]


def test_the_borg_account_runs_borg_serve_and_never_a_shell(host):
    for key in (f"{CONFIG}/id_ed25519", ADMIN_KEY):
        result = host.run(f"ssh -i {key} {SSH_OPTIONS} -p 2222 borg@backup.mol.test "
                          "'echo SHELL-$((6*7)); id' </dev/null")
        assert result.rc != 255, result.stderr  # logged in: ssh itself did not fail
        assert "SHELL-42" not in result.stdout and "uid=" not in result.stdout
        tty = host.run(f"timeout 60 ssh -tt -i {key} {SSH_OPTIONS} -p 2222 borg@backup.mol.test sh"
                       " </dev/null")
        assert "uid=" not in tty.stdout and "$ " not in tty.stdout
    # Another account on the borg sshd, and the borg account on the host's own sshd: refused.
    root = host.run(f"ssh -i {ADMIN_KEY} {SSH_OPTIONS} -p 2222 root@backup.mol.test id")
    assert root.rc == 255
    own = host.run(f"ssh -i {CONFIG}/id_ed25519 -o UserKnownHostsFile=/dev/null "
                   "-o StrictHostKeyChecking=no -o BatchMode=yes -o IdentitiesOnly=yes "
                   "-p 22 borg@backup.mol.test id")
    assert own.rc == 255 and "Permission denied" in own.stderr


def test_no_passphrase_on_the_backup_host(host, backup, runs):
    for passphrase in PASSPHRASES.values():
        found = backup.run("grep -rlF -D skip -e %s /srv/borg /etc /var", passphrase)
        assert found.rc == 1, found.stdout + found.stderr  # 1: searched everything, no match
        # The same search does find it where it is kept, on the client.
        kept = host.run("grep -rlF -D skip -e %s /etc", passphrase)
        assert kept.rc == 0 and kept.stdout.startswith(f"{CONFIG}/passphrases/")
    # And the search does read the repositories (their config is text).
    assert backup.run("grep -rlF -e '[repository]' /srv/borg").rc == 0


def test_restore_brings_back_the_originals_and_keeps_the_current_data(host, runs):
    before = tree(host, ALPHA)
    latest = archives(host, "alpha.1")[-1]
    host.check_output(f"rm {q(ALPHA + '/notes 2026.txt')} && "
                      f"echo changed >> {ALPHA}/dovecot.index.log")
    result = host.run(f"/usr/local/sbin/coophost-backup restore alpha.1 mail {latest}")
    assert result.rc == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["archive"] == latest
    assert tree(host, ALPHA) == before
    assert host.file(f"{ALPHA}/cur/1700000000.M1P1.mol:2,S").uid == 5000  # numeric ids kept
    [kept] = report["previous_data"]
    assert re.fullmatch(r"/var/mail/archive/alpha\.1\.before-restore\.\d{8}T\d{6}" + ALPHA, kept)
    previous = tree(host, kept)
    assert "/notes 2026.txt" not in previous
    assert host.file(f"{kept}/dovecot.index.log").content_string == "index\nchanged\n"
    assert {p: v for p, v in previous.items() if p != "/dovecot.index.log"} == \
        {p: v for p, v in before.items() if p not in ("/dovecot.index.log", "/notes 2026.txt")}
    # No staging folder is left beside the data; beta.2 was not touched.
    assert sorted(host.file("/var/mail/units").listdir()) == ["alpha.1", "beta.2"]


# A unit with a database (gamma.3): dumped before each backup, restored and compared.

GAMMA_DB = "cloud_gamma.3"
GAMMA_DUMP = "/var/lib/coophost-backup/dumps/gamma.3/cloud/cloud_gamma.3.sql"


def sql(host, statement, dbname=GAMMA_DB):
    """Run `statement` as the postgres superuser in `dbname`; its rows as text."""
    return host.check_output(
        f"runuser -u postgres -- psql --no-psqlrc -v ON_ERROR_STOP=1 --tuples-only --no-align "
        f"--dbname={q(dbname)} -c {q(statement)}")


def dump_body(host, dbname):
    """pg_dump of `dbname` without its random \\restrict lines, as coophost-backup compares."""
    out = host.check_output(f"runuser -u postgres -- pg_dump --quote-all-identifiers "
                            f"--dbname={q(dbname)}")
    return [line for line in out.splitlines()
            if not line.startswith(("\\restrict ", "\\unrestrict "))]


def test_the_database_dump_is_archived_root_only_with_the_rows(host, runs):
    dump = host.file(GAMMA_DUMP)
    assert dump.user == "root" and dump.mode == 0o600
    assert host.file(os.path.dirname(GAMMA_DUMP)).mode == 0o700
    assert "photos/été.jpg" in dump.content_string
    latest = archives(host, "gamma.3")[-1]
    listed = host.check_output(as_admin("gamma.3", f"borg list --short {REPOS}/gamma.3::{latest}"))
    assert GAMMA_DUMP.lstrip("/") in listed.splitlines()


def test_a_database_that_cannot_be_dumped_fails_its_unit_and_archives_nothing(host, runs):
    before = archives(host, "gamma.3")
    sql(host, f'ALTER DATABASE "{GAMMA_DB}" RENAME TO "cloud_gamma.away"', "postgres")
    try:
        result = host.run("/usr/local/sbin/coophost-backup create --owner gamma.3")
    finally:
        sql(host, f'ALTER DATABASE "cloud_gamma.away" RENAME TO "{GAMMA_DB}"', "postgres")
    assert result.rc == 1
    [report] = [json.loads(line) for line in result.stdout.splitlines()]
    assert report["ok"] is False and "pg_dump cloud_gamma.3" in report["error"]
    assert archives(host, "gamma.3") == before


def test_restore_brings_back_the_database_identical_and_keeps_the_current_one(host, runs):
    before = dump_body(host, GAMMA_DB)
    latest = archives(host, "gamma.3")[-1]
    sql(host, "DELETE FROM files WHERE note = 'unicode'; "
              "INSERT INTO files (path) VALUES ('written after the backup')")
    result = host.run(f"/usr/local/sbin/coophost-backup restore gamma.3 cloud {latest}")
    assert result.rc == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    [database] = report["databases"]
    assert database["name"] == GAMMA_DB and database["identical"] is True
    assert dump_body(host, GAMMA_DB) == before
    assert sql(host, "SELECT path FROM files ORDER BY id").splitlines() == [
        "photos/été.jpg", "docs/a b.txt", "null"]
    # The restored database belongs to the unit's own role, which can use it.
    assert sql(host, f"SELECT pg_get_userbyid(datdba) FROM pg_database "
                     f"WHERE datname = '{GAMMA_DB}'") == "cloud_gamma"
    inserted = sql(host, "SET ROLE cloud_gamma; INSERT INTO files (path) VALUES ('x') "
                         "RETURNING id")
    assert "4" in inserted.splitlines(), inserted  # the restored sequence goes on from 3
    # The database as it was before the restore is kept, with what was written after.
    kept = database["previous"]
    assert re.fullmatch(r"cloud_gamma\.3_prev_\d{8}t\d{6}", kept)
    assert "written after the backup" in sql(host, "SELECT path FROM files", kept)
    # No restore database is left behind.
    names = sql(host, "SELECT datname FROM pg_database", "postgres").splitlines()
    assert not [n for n in names if "_restore_" in n], names


# Last: it stops and starts the host's own sshd.
def test_pushes_work_while_the_hosts_own_sshd_is_stopped(host, backup):
    backup.check_output("systemctl stop ssh.service")
    try:
        listed = host.run(as_admin("alpha.1", f"borg list --short {REPOS}/alpha.1"))
    finally:
        backup.check_output("systemctl start ssh.service")
    assert listed.rc == 0, listed.stderr


def test_the_borg_sshd_serves_with_the_hosts_own_sshd_running(host):
    listed = host.run(as_admin("alpha.1", f"borg list --short {REPOS}/alpha.1"))
    assert listed.rc == 0, listed.stderr
