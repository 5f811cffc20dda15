"""Nextcloud on a real lab host, up to Nextcloud's archive: each member's instance answers over
TLS from its own PHP-FPM pool with its own database and Redis, members cannot reach each
other's files, databases or caches, suspension closes the instance and resume opens it again,
and the database and data folder come back byte for byte from a backup and in a takeout.

bread-coop has nextcloud in the sample co-op (on h1, one of the lab's two hosts of group
nextcloud); this module gives cycle-works one too, on the same host, so isolation is tested
between two members of one host, and takes it away at the end (its folder and database go to
the host's archive). Nextcloud's own code is not installed: the lab's mirror cannot serve its
archive (no upstream release server is reachable here), so every test stops at the instance
prepared for it; services/nextcloud/README.md lists what is proven only on real hosts.
Traffic goes only to 127.0.0.1 (the lab DNS and published ports) and to the lab hosts on the
lab network.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coophost.lab.gitprobe import https_get, resolve
from coophost.lab.lab import Lab, LabState
from coophost.lab.mailcheck import acme_roots, lab_state
from coophost.lab.nextcloudprobe import (
    PREFLIGHT,
    NextcloudUnit,
    fetch_preflight,
    nextcloud_units,
    preflight_problems,
)
from tests.integration.conftest import LabInfo
from tests.integration.test_restore import SUMS

pytestmark = pytest.mark.lab

A = "bread-coop"  # nextcloud in the sample co-op
B = "cycle-works"  # given nextcloud by this module, on A's host
ROOT = "/srv/nextcloud"
ARCHIVE = "/srv/nextcloud-archive"
# A table of the member's own, with text, binary and NULL values, written as the member.
SEED_SQL = textwrap.dedent("""
    DROP TABLE IF EXISTS coophost_probe;
    CREATE TABLE coophost_probe (id integer PRIMARY KEY, note text, blob bytea);
    INSERT INTO coophost_probe
        SELECT n, 'row ' || n || ' é ✓ '' "quoted"', decode(md5(n::text), 'hex')
        FROM generate_series(1, 500) AS n;
    INSERT INTO coophost_probe VALUES (501, NULL, NULL);
""")


@dataclass
class NcLab:
    """The lab with A's and B's nextcloud units deployed on one host."""

    info: LabInfo
    lab: Lab
    state: LabState
    cafile: Path
    scratch: Path

    def units(self) -> dict[str, NextcloudUnit]:
        return {u.slug: u for u in nextcloud_units(self.info.inventory, self.state)}

    def unit(self, slug: str) -> NextcloudUnit:
        return self.units()[slug]

    def on(self, slug: str, *argv: str, user: str | None = None, stdin: bytes | None = None
           ) -> subprocess.CompletedProcess[bytes]:
        """Run `argv` on `slug`'s host, as root or as `user`."""
        prefix = ["runuser", "-u", user, "--"] if user else []
        return subprocess.run(["docker", "exec", "-i", self.lab.container(self.unit(slug).host),
                               *prefix, *argv], input=stdin, capture_output=True, timeout=300,
                              check=False)

    def get(self, slug: str, path: str) -> tuple[int, dict[str, str], bytes]:
        unit = self.unit(slug)
        return https_get(resolve(unit.vhost, self.state.dns_port), unit.vhost, path, self.cafile)

    def preflight(self, slug: str) -> tuple[int, dict[str, Any] | None]:
        unit = self.unit(slug)
        status, page, _ = fetch_preflight(unit, resolve(unit.vhost, self.state.dns_port),
                                          self.cafile)
        return status, page

    def psql(self, slug: str, database: str, sql: str, user: str | None = None
             ) -> subprocess.CompletedProcess[bytes]:
        """psql over the local socket as `user` (default: `slug`'s own account, by peer)."""
        return self.on(slug, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h",
                       "/var/run/postgresql", "-d", database, "-At", "-c", sql,
                       user=user or self.unit(slug).account)

    def dump(self, slug: str) -> str:
        """The unit's database as plain SQL, without pg_dump's random \\restrict lines."""
        done = self.on(slug, "pg_dump", "-d", self.unit(slug).database, user="postgres")
        assert done.returncode == 0, done.stderr
        return "\n".join(line for line in done.stdout.decode().splitlines()
                         if not line.startswith(("\\restrict", "\\unrestrict")))

    def sums(self, slug: str) -> dict[str, str]:
        unit = self.unit(slug)
        done = self.on(slug, "python3", "-c", SUMS, f"{ROOT}/{unit.owner}/data",
                       f"{ROOT}/{unit.owner}/config")
        assert done.returncode == 0, done.stderr
        found: dict[str, str] = json.loads(done.stdout)
        return found

    def deploy(self, *args: str) -> dict[str, Any]:
        proc = self.info.cli("deploy", "--json", *args, timeout=1800)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        report: dict[str, Any] = json.loads(proc.stdout)
        return report


@pytest.fixture(scope="module")
def nc(lab: LabInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NcLab]:
    scratch = tmp_path_factory.mktemp("nextcloud")
    the_lab = Lab(lab.name, lab.inventory)
    state = lab_state(the_lab)
    cafile = scratch / "acme-root.pem"
    cafile.write_text(acme_roots(the_lab, state))
    info = NcLab(lab, the_lab, state, cafile, scratch)
    assert A in info.units(), "the sample co-op gives bread-coop a nextcloud unit"
    lab.cli("service", "enable", B, "nextcloud", "--set", "quota_gb=2", "--set", "max_users=3",
            check=True)
    lab.cli("member", "move", B, "nextcloud", info.unit(A).host, "--force", check=True)
    lab.cli("render", check=True)  # secrets exist before DNS is published
    lab.cli("lab", "dns", "sync", "--name", lab.name, check=True)  # vhosts resolve for ACME
    info.deploy()
    units = info.units()
    assert units[B].host == units[A].host, units
    yield info
    # B's nextcloud goes away again (the modules after this one know B without it): the role
    # moves its folder and a dump of its database to the archive and drops the database
    owner = units[B].owner
    lab.cli("service", "disable", B, "nextcloud", check=True)
    info.deploy()
    host = units[B].host
    listed = subprocess.run(["docker", "exec", the_lab.container(host), "sh", "-c",
                             f"ls {ARCHIVE}/{owner}.*/"], capture_output=True, text=True,
                            check=False)
    assert listed.returncode == 0 and "data" in listed.stdout, listed.stdout + listed.stderr
    gone = subprocess.run(["docker", "exec", the_lab.container(host), "runuser", "-u",
                           "postgres", "--", "psql", "-XAtc",
                           "SELECT count(*) FROM pg_database WHERE datname = "
                           f"'nextcloud_{owner}'"], capture_output=True, text=True, check=False)
    assert gone.stdout.strip() == "0", gone.stdout + gone.stderr


def test_each_preflight_answers_over_tls_from_the_members_own_pool(nc: NcLab) -> None:
    for slug in (A, B):
        unit = nc.unit(slug)
        status, page = nc.preflight(slug)
        assert status == 200 and page is not None, (slug, status)
        assert preflight_problems(unit, page) == [], (slug, page)
        assert page["pool_user"] == f"nc-{slug}" and page["database"]["current"] == unit.database
    # the pools run as the members' accounts, never as www-data or root
    ps = nc.on(A, "ps", "-o", "user:32=", "-o", "args=", "-C", "php-fpm8.2")
    workers = [line.split(None, 1) for line in ps.stdout.decode().splitlines()]
    users = {user for user, args in workers if "pool nc-" in args}
    assert users == {f"nc-{A}", f"nc-{B}"}, workers
    # without Nextcloud's archive in the mirror, the instance says it is being prepared
    status, headers, _ = nc.get(A, "/")
    assert status == 302 and headers["location"].endswith("/prepared.html"), (status, headers)
    status, _, body = nc.get(A, "/prepared.html")
    assert status == 200 and b"being prepared" in body


def test_plain_http_is_redirected_to_https(nc: NcLab) -> None:
    import http.client

    unit = nc.unit(A)
    conn = http.client.HTTPConnection(resolve(unit.vhost, nc.state.dns_port), 80, timeout=20)
    try:
        conn.request("GET", PREFLIGHT, headers={"Host": unit.vhost})
        answer = conn.getresponse()
        assert answer.status == 301, answer.status
        assert answer.getheader("location") == f"https://{unit.vhost}{PREFLIGHT}"
    finally:
        conn.close()


def test_member_b_cannot_read_member_a_files_database_or_redis(nc: NcLab) -> None:
    a, b = nc.unit(A), nc.unit(B)
    secret = f"{ROOT}/{a.owner}/data/isolation-secret.txt"
    made = nc.on(A, "sh", "-c", f"umask 007; echo only-for-{A} > {secret}", user=a.account)
    assert made.returncode == 0, made.stderr
    for path in (secret, f"{ROOT}/{a.owner}/config", f"{ROOT}/{a.owner}/data"):
        read = nc.on(B, "cat" if path == secret else "ls", path, user=b.account)
        assert read.returncode != 0 and b"Permission denied" in read.stderr, (path, read)
    assert nc.on(A, "cat", secret, user=a.account).stdout == f"only-for-{A}\n".encode()
    # B's role, by peer as B's account, cannot open A's database; A's own can
    assert nc.psql(A, a.database, "SELECT current_user").stdout.decode().strip() == a.account
    refused = nc.psql(B, a.database, "SELECT 1", user=b.account)
    assert refused.returncode != 0, refused
    assert b"pg_hba.conf rejects connection" in refused.stderr, refused
    # nor connect over TCP with A's role name and no password
    tcp = nc.on(B, "psql", "-X", "-h", "127.0.0.1", "-U", a.account, "-d", a.database,
                "-c", "SELECT 1", user=b.account, stdin=b"")
    assert tcp.returncode != 0, tcp
    # A's Redis socket is A's alone
    a_socket = f"/run/coophost-nextcloud-redis-{A}/redis.sock"
    assert nc.on(A, "redis-cli", "-s", a_socket, "ping", user=a.account).stdout.strip() == \
        b"PONG"
    other = nc.on(B, "redis-cli", "-s", a_socket, "ping", user=b.account)
    assert b"PONG" not in other.stdout, other
    # and nothing listens on Redis's TCP port
    listening = nc.on(A, "ss", "-Hltn")
    assert b":6379 " not in listening.stdout, listening.stdout


def test_suspension_closes_only_that_instance_and_resume_reopens_it(nc: NcLab) -> None:
    nc.info.cli("member", "suspend", B, check=True)
    try:
        nc.deploy("--member", B)
        for path in (PREFLIGHT, "/", "/index.php/login"):
            status, _, body = nc.get(B, path)
            assert status == 503 and b"suspended" in body.lower(), (path, status)
        status, page = nc.preflight(A)  # the other member on the host is untouched
        assert status == 200 and page is not None and page["ok"] is True
    finally:
        nc.info.cli("member", "resume", B, check=True)
        nc.deploy("--member", B)
    status, page = nc.preflight(B)
    assert status == 200 and page is not None and page["ok"] is True, page


def test_backup_and_restore_bring_back_the_database_and_files_byte_for_byte(nc: NcLab) -> None:
    a = nc.unit(A)
    seeded = nc.psql(A, a.database, SEED_SQL)
    assert seeded.returncode == 0, seeded.stderr
    kept = f"{ROOT}/{a.owner}/data/restore-test.bin"
    made = nc.on(A, "sh", "-c", f"head -c 300000 /dev/urandom > {kept}", user=a.account)
    assert made.returncode == 0, made.stderr
    before_dump, before_files = nc.dump(A), nc.sums(A)
    assert "coophost_probe" in before_dump and kept in before_files
    ran = nc.info.cli("backup", "run", "--host", a.host, "--json", timeout=1800)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    made_archives = [x for h in json.loads(ran.stdout)["hosts"] for x in h["archives"]]
    assert any(x["owner"] == a.owner and x["service"] == "nextcloud" and x["ok"]
               for x in made_archives), made_archives
    # damage: rows changed, the table of the member's own dropped, a file deleted
    assert nc.psql(A, a.database, "DROP TABLE coophost_probe").returncode == 0
    assert nc.on(A, "rm", "-f", kept).returncode == 0
    assert nc.dump(A) != before_dump
    proc = nc.info.cli("backup", "restore", A, "nextcloud", "--json", timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["ok"]
    assert nc.dump(A) == before_dump
    assert nc.sums(A) == before_files
    rows = nc.psql(A, a.database, "SELECT count(*), count(note) FROM coophost_probe")
    assert rows.stdout.decode().strip() == "501|500", rows
    # the restored database is as closed as the one it replaced: no CONNECT for PUBLIC
    closed = nc.psql(A, "postgres", "SELECT has_database_privilege('public', "
                     f"'{a.database}', 'CONNECT')", user="postgres")
    assert closed.stdout.decode().strip() == "f", closed
    # the instance still answers from its pool with the restored database
    status, page = nc.preflight(A)
    assert status == 200 and page is not None and page["ok"] is True, page


def test_export_holds_the_database_dump_and_the_data_and_nothing_of_another(nc: NcLab) -> None:
    a, b = nc.unit(A), nc.unit(B)
    archive = nc.scratch / "a-export.tar.gz"
    nc.info.cli("member", "export", A, "--out", str(archive), check=True)
    prefix = f"nextcloud/{a.host}/"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        dump_name = f"{prefix}dumps/{a.database}.sql"
        assert dump_name in names, [n for n in names if n.startswith(prefix)][:20]
        dumped = tar.extractfile(dump_name)
        assert dumped is not None
        text = dumped.read().decode()
        assert any(n.endswith("/data/restore-test.bin") for n in names), names[:40]
    assert 'CREATE TABLE "public"."coophost_probe"' in text and "row 17 é ✓" in text
    assert not any(b.owner in n or b.database in n for n in names)
    # the member can load its takeout into a PostgreSQL of its own: here, a new database
    scratch_db = "coophost_takeout_check"
    for sql in (f"DROP DATABASE IF EXISTS {scratch_db}", f"CREATE DATABASE {scratch_db}"):
        assert nc.psql(A, "postgres", sql, user="postgres").returncode == 0
    try:
        loaded = nc.on(A, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
                       "-d", scratch_db, user="postgres", stdin=text.encode())
        assert loaded.returncode == 0, loaded.stderr
        rows = nc.psql(A, scratch_db, "SELECT count(*) FROM coophost_probe", user="postgres")
        assert rows.stdout.decode().strip() == "501", rows
    finally:
        nc.psql(A, "postgres", f"DROP DATABASE IF EXISTS {scratch_db}", user="postgres")


NOT_HERE = ("Nextcloud is not installed: its archive is not in the co-op's artifact store, and "
            "no upstream release server is reachable from this machine; install, upgrade, "
            "settings and background jobs are proven only on real hosts")


def test_an_installed_instance_answers_and_runs_its_background_jobs(nc: NcLab) -> None:
    unit = nc.unit(A)
    if nc.on(A, "test", "-f", f"{ROOT}/{unit.owner}/code/version.php").returncode != 0:
        pytest.skip(NOT_HERE)
    status, _, body = nc.get(A, "/status.php")
    assert status == 200 and json.loads(body)["installed"] is True, body
    timer = nc.on(A, "systemctl", "is-active", f"coophost-nextcloud-cron@{A}.timer")
    assert timer.stdout.decode().strip() == "active", timer
    listed = nc.on(A, "/usr/local/lib/coophost-nextcloud/nextcloud-occ", unit.owner,
                   "user:list", "--output=json")
    assert listed.returncode == 0 and "admin" in json.loads(listed.stdout), listed


def test_redeploy_changes_nothing(nc: NcLab) -> None:
    report = nc.deploy("--all")
    for name, host in report["hosts"].items():
        assert (host["status"], host["changed"], host["failed"]) == ("ok", 0, 0), (name, host)
    status, page = nc.preflight(A)
    assert status == 200 and page is not None and page["ok"] is True
