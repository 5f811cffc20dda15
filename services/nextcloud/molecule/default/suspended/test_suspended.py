"""Second phase: beta suspended, gamma gone from the host."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from ncmol import ARCHIVE, ROOT, get, preflight, run, user


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
    assert host.file(f"{ROOT}/beta/data/molecule-secret.txt").content_string == "beta-only\n"


def test_a_departed_unit_is_archived_with_its_database(host):
    assert not host.file(f"{ROOT}/gamma").exists
    archived = run(host, f"ls -d {ARCHIVE}/gamma.*").stdout.split()
    assert len(archived) == 1
    folder = archived[0]
    assert host.file(f"{folder}/database.dump").size > 0
    assert host.file(f"{folder}/data").is_directory
    assert host.file(ARCHIVE).mode == 0o700
    assert not host.user(user("gamma")).exists
    assert not host.service("coophost-nextcloud-redis@gamma").is_running
    assert not host.file("/etc/php/8.2/fpm/pool.d/coophost-nc-gamma.conf").exists
    dbs = host.check_output("runuser -u postgres -- psql -Atc 'SELECT datname FROM pg_database'")
    assert "nextcloud_gamma" not in dbs.split()
    conf = host.file("/etc/nginx/conf.d/coophost-nextcloud.conf").content_string
    assert "cloud.gamma.test" not in conf
    # no server answers for it any more (nginx's default one has another certificate)
    assert run(host, "curl -sS -o /dev/null https://cloud.gamma.test/").rc != 0
