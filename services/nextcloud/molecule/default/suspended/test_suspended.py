"""Second phase: beta suspended, gamma gone from the host."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from ncmol import ARCHIVE, LATER_ALPHA, OWNERS, database, get, preflight, run, unit_dir, user


def test_a_suspended_members_vhost_answers_503_with_the_suspension_page(host):
    for path in ("/", "/coophost-preflight", "/index.php/login", "/prepared.html"):
        status, _, body = get(host, f"https://cloud.beta.test{path}")
        assert status == 503, path
        assert "suspended" in body
        assert "log in" in body


def test_the_other_member_is_untouched(host):
    status, report = preflight(host, "alpha")
    assert status == 200 and report["ok"] is True and report["pool_user"] == "nc-alpha"


def test_a_suspended_members_data_stays(host):
    assert host.file(f"{unit_dir('beta')}/data/molecule-secret.txt").content_string == \
        "beta-only\n"


def test_a_departed_unit_is_archived_with_its_database(host):
    assert not host.file(unit_dir("gamma")).exists
    archived = run(host, f"ls -d {ARCHIVE}/{OWNERS['gamma']}.*").stdout.split()
    assert len(archived) == 1
    folder = archived[0]
    assert host.file(f"{folder}/database.dump").size > 0
    assert host.file(f"{folder}/data").is_directory
    assert host.file(ARCHIVE).mode == 0o700
    assert not host.user(user("gamma")).exists
    assert not host.service("coophost-nextcloud-redis@gamma").is_running
    assert not host.file("/etc/php/8.2/fpm/pool.d/coophost-nc-gamma.conf").exists
    dbs = host.check_output("runuser -u postgres -- psql -Atc 'SELECT datname FROM pg_database'")
    assert database("gamma") not in dbs.split()
    conf = host.file("/etc/nginx/conf.d/coophost-nextcloud.conf").content_string
    assert "cloud.gamma.test" not in conf
    # no server answers for it any more (nginx's default one has another certificate)
    assert run(host, "curl -sS -o /dev/null https://cloud.gamma.test/").rc != 0


def databases(host):
    return host.check_output("runuser -u postgres -- psql -Atc 'SELECT datname FROM pg_database'"
                             ).split()


def test_a_later_member_given_the_same_slug_gets_none_of_the_first_ones_data(host):
    # The first alpha's unit was never archived here (as when its host was out of reach); the
    # later alpha gets a new folder and database, and the first one's go to the archive.
    first, later = OWNERS["alpha"], LATER_ALPHA
    assert not host.file(unit_dir("alpha", first)).exists
    assert not host.file(f"{unit_dir('alpha', later)}/data/first-life.txt").exists
    archived = run(host, f"ls -d {ARCHIVE}/{first}.*").stdout.split()
    assert len(archived) == 1
    assert host.file(f"{archived[0]}/data/first-life.txt").content_string == "first-alpha-only\n"
    assert host.file(f"{archived[0]}/database.dump").size > 0
    assert database("alpha", first) not in databases(host)
    assert database("alpha", later) in databases(host)
    tables = run(host, f"runuser -u postgres -- psql -d {database('alpha', later)} -Atc "
                       "'SELECT count(*) FROM pg_tables WHERE tablename = $$first_life$$'")
    assert tables.stdout.strip() == "0"
    # the account and pool are the slug's, now the later member's
    assert host.user(user("alpha")).exists
    status, report = preflight(host, "alpha")
    assert status == 200 and report["ok"] is True
    assert report["database"]["current"] == database("alpha", later)
