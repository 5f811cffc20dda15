"""The nextcloud service on the converged host (first phase: alpha, beta and gamma active).

No host serves the Nextcloud archive here, so Nextcloud itself is not installed (the role says
so and skips it): these tests check everything up to it. Each member's pool runs as the member,
PHP has every module Nextcloud requires, the preflight page answers through the member's vhost
over TLS from that pool with its database and Redis reachable, and no member's account reaches
another member's files, database or Redis.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from ncmol import (
    PHP_MODULES,
    ROOT,
    SLUGS,
    as_user,
    database,
    get,
    preflight,
    redis_socket,
    run,
    unit_dir,
    user,
)


def test_accounts_are_locked_system_accounts_without_a_shell(host):
    for slug in SLUGS:
        account = host.user(user(slug))
        assert account.exists
        assert account.shell == "/usr/sbin/nologin"
        assert account.groups == [user(slug)]
        assert account.password.startswith("!")
        assert account.uid < 1000
    assert "nc-" not in host.check_output("getent group sudo")


def test_folders_keep_data_and_config_private_and_outside_the_web_root(host):
    for slug in SLUGS:
        top = host.file(unit_dir(slug))
        assert (top.user, top.group, top.mode) == (user(slug), "www-data", 0o750)
        for sub in ("data", "config"):
            folder = host.file(f"{unit_dir(slug)}/{sub}")
            assert (folder.user, folder.group, folder.mode) == (user(slug), user(slug), 0o770)
        assert host.file(f"{unit_dir(slug)}/tmp").mode == 0o700
        # named after the member life, never after the slug alone
        assert not host.file(f"{ROOT}/{slug}").exists
    # the vhost's web root is code/ (or the coophost pages): never the folder holding data
    conf = host.file("/etc/nginx/conf.d/coophost-nextcloud.conf").content_string
    alpha = unit_dir("alpha")
    assert f"root {alpha};" not in conf and f"root {alpha}/data" not in conf


def test_each_pool_runs_as_its_member_with_a_socket_only_nginx_opens(host):
    for slug in SLUGS:
        sock = host.file(f"/run/php/coophost-nc-{slug}.sock")
        assert sock.is_socket
        assert (sock.user, sock.group, sock.mode) == ("www-data", "www-data", 0o600)
        pool = host.file(f"/etc/php/8.2/fpm/pool.d/coophost-nc-{slug}.conf").content_string
        assert f"user = nc-{slug}\n" in pool and f"group = nc-{slug}\n" in pool
    assert host.service("php8.2-fpm").is_running


def test_php_has_every_module_nextcloud_requires(host):
    loaded = {line.strip().lower() for line in host.check_output("php -m").splitlines()}
    assert [m for m in PHP_MODULES if m not in loaded] == []


def test_preflight_answers_through_each_vhost_from_that_members_pool(host):
    for slug in SLUGS:
        status, report = preflight(host, slug)
        assert status == 200, report
        assert report["pool_user"] == user(slug)
        assert report["member"] == slug
        assert report["sapi"] == "fpm-fcgi"
        assert report["php_version"].startswith("8.2.")
        assert report["modules"]["missing"] == [], report["modules"]
        assert sorted(report["modules"]["present"]) == sorted(PHP_MODULES)
        assert report["database"]["reachable"], report["database"]
        assert report["database"]["role"] == user(slug)
        assert report["database"]["current"] == database(slug)
        assert report["redis"]["reachable"], report["redis"]
        assert report["ok"] is True


def test_without_the_archive_the_vhost_shows_the_being_prepared_page(host):
    status, headers, _ = get(host, "https://cloud.alpha.test/")
    assert status == 302 and "location: https://cloud.alpha.test/prepared.html" in headers
    status, _, body = get(host, "https://cloud.alpha.test/prepared.html")
    assert status == 200 and "being prepared" in body
    assert "artifact store" in body
    assert not host.file(f"{unit_dir('alpha')}/code/occ").exists
    assert not host.service("coophost-nextcloud-cron@alpha.timer").is_enabled


def test_the_vhost_serves_https_with_its_own_certificate(host):
    out = run(host, "echo | openssl s_client -connect 127.0.0.1:443 -servername "
                    "cloud.beta.test 2>/dev/null | openssl x509 -noout -subject")
    assert "CN = cloud.beta.test" in out.stdout


def test_a_member_cannot_read_another_members_files(host):
    beta = unit_dir("beta")
    secret = f"{beta}/data/molecule-secret.txt"
    assert run(host, f"echo beta-only > {secret} && chown nc-beta:nc-beta {secret} "
                     f"&& chmod 0640 {secret}").rc == 0
    assert as_user(host, "beta", f"cat {secret}").stdout.strip() == "beta-only"
    for path in (secret, f"{beta}/data", f"{beta}/config", f"{beta}/tmp"):
        denied = as_user(host, "alpha", f"ls {path} || cat {path}")
        assert denied.rc != 0 and "Permission denied" in denied.stderr, path
    # and not through the pool either: PHP's open_basedir keeps it in its own folder
    pool = host.file("/etc/php/8.2/fpm/pool.d/coophost-nc-alpha.conf").content_string
    assert f"open_basedir] = {unit_dir('alpha')}/:" in pool


def test_a_member_cannot_connect_to_another_members_database(host):
    own = as_user(host, "alpha", f"psql -h /var/run/postgresql -d {database('alpha')} -Atc "
                                 "'SELECT current_user'")
    assert own.rc == 0 and own.stdout.strip() == "nc-alpha"
    other = as_user(host, "alpha", f"psql -h /var/run/postgresql -d {database('beta')} "
                                   "-Atc 'SELECT 1'")
    assert other.rc != 0 and "nc-alpha" in other.stderr
    # nor as beta's role (peer authentication: the account must be beta's)
    other_role = as_user(host, "alpha", f"psql -h /var/run/postgresql -U nc-beta "
                                        f"-d {database('beta')} -Atc 'SELECT 1'")
    assert other_role.rc != 0
    # nor over TCP, nor to the postgres database
    tcp = as_user(host, "alpha", f"PGPASSWORD=test-db-alpha psql -h 127.0.0.1 "
                                 f"-d {database('alpha')} -Atc 'SELECT 1'")
    assert tcp.rc != 0
    assert as_user(host, "alpha", "psql -h /var/run/postgresql -d postgres -Atc 'SELECT 1'").rc != 0


def test_a_member_cannot_open_another_members_redis(host):
    own = as_user(host, "alpha", f"redis-cli -s {redis_socket('alpha')} ping")
    assert own.rc == 0 and own.stdout.strip() == "PONG"
    other = as_user(host, "alpha", f"redis-cli -s {redis_socket('beta')} ping")
    assert "PONG" not in other.stdout
    assert "Permission denied" in other.stdout + other.stderr


def test_redis_listens_on_no_tcp_port(host):
    for slug in SLUGS:
        conf = host.file(f"/etc/coophost-nextcloud/redis-{slug}.conf").content_string
        assert "port 0\n" in conf
        assert host.service(f"coophost-nextcloud-redis@{slug}").is_running
        sock = host.file(redis_socket(slug))
        assert sock.is_socket and (sock.user, sock.mode) == (user(slug), 0o600)
    listening = host.check_output("ss -Hltnp")
    assert "redis" not in listening
    assert not host.service("redis-server").is_enabled


def test_the_first_alpha_leaves_data_and_a_table(host):
    # Phase two gives the slug alpha to a later member: this data must not reach it.
    folder = unit_dir("alpha")
    assert run(host, f"echo first-alpha-only > {folder}/data/first-life.txt && "
                     f"chown nc-alpha:nc-alpha {folder}/data/first-life.txt").rc == 0
    made = as_user(host, "alpha", f"psql -h /var/run/postgresql -d {database('alpha')} -Atc "
                                  "'CREATE TABLE first_life (note text); "
                                  "INSERT INTO first_life VALUES (1)'")
    assert made.rc == 0, made.stderr
