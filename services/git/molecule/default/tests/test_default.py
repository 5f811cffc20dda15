"""The git service on the converged host (first phase: alpha, beta and gamma active).

SSH push, anonymous and authenticated smart HTTP, cgit, quota, isolation between members and
the member's own gitolite-admin, all run inside the instance (gitmol.py). The tests run in file
order and leave what later phases check in /root/mol (commit ids, work trees).
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from gitmol import (
    GIT_ID,
    OWNERS,
    fresh_tree,
    http_status,
    https_url,
    new_commit,
    ok,
    password,
    refs,
    remember,
    sh,
    ssh_command,
    ssh_url,
)


def test_accounts_are_locked_system_accounts_with_private_homes(host):
    for slug, owner in OWNERS.items():
        user = host.user(f"g-{slug}")
        assert user.exists
        assert user.home == f"/srv/git/units/{owner}"
        assert user.shell == "/bin/sh"
        assert user.groups == [f"g-{slug}"]
        assert user.password.startswith("!")
        home = host.file(user.home)
        assert home.is_directory and home.user == f"g-{slug}" and home.mode == 0o700
    assert "g-" not in host.check_output("getent group sudo www-data")


def test_fcgiwrap_sockets_only_for_nginx_and_the_member(host):
    for slug in OWNERS:
        sock = host.file(f"/run/coophost-git/{slug}.sock")
        assert sock.is_socket
        assert (sock.user, sock.group, sock.mode) == (f"g-{slug}", "www-data", 0o660)
    assert not host.service("fcgiwrap.socket").is_enabled
    assert host.socket("tcp://0.0.0.0:443").is_listening


def test_ssh_push_with_the_members_key_on_its_default_branch(host):
    work = fresh_tree(host, "pub")
    first = new_commit(host, work, "one")
    ok(host, f"cd {work} && git push -q {ssh_url('alpha', 'pub')} main", key="alpha")
    remember(host, "pub-first", first)
    bare = f"/srv/git/units/{OWNERS['alpha']}/repositories/pub.git"
    assert refs(host, bare)["refs/heads/main"] == first
    assert host.file(f"{bare}/HEAD").content_string.strip() == "ref: refs/heads/main"
    # beta's default branch is trunk: a repository it creates starts there
    work = fresh_tree(host, "beta-pub", branch="trunk")
    remember(host, "beta-first", new_commit(host, work, "beta-one"))
    ok(host, f"cd {work} && git push -q {ssh_url('beta', 'site')} trunk", key="beta")
    beta_bare = f"/srv/git/units/{OWNERS['beta']}/repositories/site.git"
    assert host.file(f"{beta_bare}/HEAD").content_string.strip() == "ref: refs/heads/trunk"
    ok(host, f"{ssh_command('beta')} g-beta@127.0.0.1 perms site + READERS daemon")


def test_another_members_key_is_refused(host):
    work = "/root/mol/w/pub"
    result = sh(host, f"cd {work} && git push {ssh_url('alpha', 'pub')} main", key="beta")
    assert result.rc != 0
    assert "Permission denied" in result.stderr
    result = sh(host, f"{ssh_command('gamma')} g-alpha@127.0.0.1 info")
    assert result.rc != 0


def test_repositories_are_private_to_their_account(host):
    for slug, other in (("alpha", "beta"), ("beta", "alpha"), ("gamma", "alpha")):
        result = host.run(f"runuser -u g-{slug} -- ls /srv/git/units/{OWNERS[other]}")
        assert result.rc != 0
    bare = f"/srv/git/units/{OWNERS['alpha']}/repositories/pub.git"
    assert ok(host, f"find {bare} ! -type l -perm /077 | wc -l") == "0"


def test_a_repository_is_public_when_daemon_may_read_it(host):
    ok(host, f"{ssh_command('alpha')} g-alpha@127.0.0.1 perms pub + READERS daemon")
    work = fresh_tree(host, "secret")
    remember(host, "secret-first", new_commit(host, work, "hidden"))
    ok(host, f"cd {work} && git push -q {ssh_url('alpha', 'secret')} main", key="alpha")
    home = f"/srv/git/units/{OWNERS['alpha']}/repositories"
    assert host.file(f"{home}/pub.git/git-daemon-export-ok").exists
    assert not host.file(f"{home}/secret.git/git-daemon-export-ok").exists


def test_anonymous_https_clone_of_a_public_repo_is_identical(host):
    pushed = refs(host, f"/srv/git/units/{OWNERS['alpha']}/repositories/pub.git")
    ok(host, "rm -rf /root/mol/w/anon && git clone -q https://git.alpha.test/pub.git "
             "/root/mol/w/anon")
    assert refs(host, "/root/mol/w/anon/.git")["refs/heads/main"] == pushed["refs/heads/main"]
    assert refs(host, https_url("alpha", "pub")) == pushed
    ok(host, "cd /root/mol/w/anon && git fsck --strict --no-progress")


def test_cgit_shows_public_repositories_only(host):
    index = ok(host, "curl -sf https://git.alpha.test/")
    assert "pub" in index and "secret" not in index
    assert http_status(host, "https://git.alpha.test/pub/")[0] == 200
    assert http_status(host, "https://git.alpha.test/pub/log/")[0] == 200
    assert http_status(host, "https://git.alpha.test/cgit.css")[0] == 200
    # private and missing repositories look the same
    assert http_status(host, "https://git.alpha.test/secret/")[0] == 404
    assert http_status(host, "https://git.alpha.test/nothing-here/")[0] == 404
    # gamma has public_web off: no pages at all
    assert http_status(host, "https://git.gamma.test/")[0] == 404


def test_private_and_missing_repos_challenge_anonymous_smart_http(host):
    for repo in ("secret", "nothing-here"):
        status, headers = http_status(
            host, f"https://git.alpha.test/{repo}.git/info/refs?service=git-upload-pack")
        assert status == 401
        assert 'www-authenticate: basic realm="git"' in headers
    result = sh(host, "GIT_TERMINAL_PROMPT=0 git clone https://git.alpha.test/secret.git "
                      "/root/mol/w/nope")
    assert result.rc != 0
    assert not host.file("/root/mol/w/nope").exists


def test_anonymous_push_is_challenged(host):
    status, headers = http_status(
        host, "https://git.alpha.test/pub.git/info/refs?service=git-receive-pack")
    assert status == 401 and "www-authenticate: basic" in headers
    result = sh(host, "cd /root/mol/w/pub && GIT_TERMINAL_PROMPT=0 "
                      "git push https://git.alpha.test/pub.git main")
    assert result.rc != 0


def test_authenticated_https_push_and_private_clone(host):
    work = "/root/mol/w/pub"
    second = new_commit(host, work, "two")
    # credentials in the URL: git tries anonymously, gets the 401 challenge, retries with them
    ok(host, f"cd {work} && git push -q {https_url('alpha', 'pub', password('alpha'))} main")
    remember(host, "pub-second", second)
    assert refs(host, ssh_url("alpha", "pub"), key="alpha")["refs/heads/main"] == second
    ok(host, f"rm -rf /root/mol/w/priv && git clone -q "
             f"{https_url('alpha', 'secret', password('alpha'))} /root/mol/w/priv")


def test_wrong_password_and_other_members_password_are_refused(host):
    url = "https://git.alpha.test/pub.git/info/refs?service=git-receive-pack"
    assert http_status(host, url, "alpha", "wrong")[0] == 401
    assert http_status(host, url, "beta", password("beta"))[0] == 401
    assert http_status(host, url, "alpha", password("alpha"))[0] == 200
    result = sh(host, "cd /root/mol/w/pub && GIT_TERMINAL_PROMPT=0 git push "
                      f"{https_url('alpha', 'pub', 'wrong')} main")
    assert result.rc != 0


def test_member_adds_a_collaborator_through_its_gitolite_admin(host):
    admin = "/root/mol/w/admin"
    ok(host, f"rm -rf {admin} && git clone -q {ssh_url('alpha', 'gitolite-admin')} {admin}",
       key="alpha")
    assert host.file(f"{admin}/keydir/coophost/alpha@coophost-1.pub").exists
    ok(host, f"cp /root/mol/collab.pub {admin}/keydir/collab.pub && cd {admin} && "
             f"git add -A && git {GIT_ID} commit -q -m 'collaborator' && git push -q",
       key="alpha")
    ok(host, f"{ssh_command('alpha')} g-alpha@127.0.0.1 perms pub + WRITERS collab")
    work = "/root/mol/w/pub"
    third = new_commit(host, work, "three")
    ok(host, f"cd {work} && git push -q {ssh_url('alpha', 'pub')} main", key="collab")
    remember(host, "pub-third", third)
    # the collaborator cannot reach the private repository
    assert sh(host, f"git ls-remote {ssh_url('alpha', 'secret')}", key="collab").rc != 0


def test_quota_refuses_a_push_over_it(host):
    work = fresh_tree(host, "big", branch="trunk")
    new_commit(host, work, "big", size_kb=60 * 1024)
    result = sh(host, f"cd {work} && git push {ssh_url('beta', 'big')} trunk", key="beta")
    assert result.rc != 0
    assert "quota of 50 MB" in result.stderr


def test_role_files_are_not_world_readable(host):
    assert host.file("/etc/coophost-git/alpha.htpasswd").mode == 0o640
    assert host.file("/etc/coophost-git/alpha.htpasswd").group == "www-data"
    assert host.file("/etc/coophost-git/alpha.cgitrc").group == "g-alpha"
    assert host.file("/etc/coophost-git/units.json").mode == 0o600
