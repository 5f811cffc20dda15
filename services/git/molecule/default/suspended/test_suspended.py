"""Second phase: beta suspended, gamma gone from the host, alpha with a second registered key."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from gitmol import (
    OWNERS,
    fresh_tree,
    http_status,
    https_url,
    new_commit,
    ok,
    password,
    recall,
    refs,
    sh,
    ssh_command,
    ssh_url,
)


def test_suspended_member_cannot_push_over_ssh(host):
    work = "/root/mol/w/beta-pub"
    new_commit(host, work, "while-suspended")
    result = sh(host, f"cd {work} && git push {ssh_url('beta', 'site')} trunk", key="beta")
    assert result.rc != 0
    assert "Permission denied" in result.stderr
    assert sh(host, f"{ssh_command('beta')} g-beta@127.0.0.1 info").rc != 0


def test_suspended_member_cannot_log_in_over_https(host):
    url = "https://git.beta.test/site.git/info/refs?service=git-receive-pack"
    assert http_status(host, url, "beta", password("beta"))[0] == 403
    result = sh(host, "cd /root/mol/w/beta-pub && GIT_TERMINAL_PROMPT=0 git push "
                      f"{https_url('beta', 'site', password('beta'))} trunk")
    assert result.rc != 0


def test_suspended_members_public_pages_and_clones_stay(host):
    assert http_status(host, "https://git.beta.test/site/")[0] == 200
    remote = refs(host, https_url("beta", "site"))
    assert remote["refs/heads/trunk"] == recall(host, "beta-first")


def test_no_data_changes_on_suspension(host):
    bare = f"/srv/git/units/{OWNERS['beta']}/repositories/site.git"
    assert refs(host, bare)["refs/heads/trunk"] == recall(host, "beta-first")
    assert host.file(bare).user == "g-beta"


def test_other_members_unaffected_and_redeploys_lose_no_commit(host):
    bare = f"/srv/git/units/{OWNERS['alpha']}/repositories/pub.git"
    assert refs(host, bare)["refs/heads/main"] == recall(host, "pub-third")
    assert refs(host, https_url("alpha", "pub"))["refs/heads/main"] == recall(host, "pub-third")
    secret = f"/srv/git/units/{OWNERS['alpha']}/repositories/secret.git"
    assert refs(host, secret)["refs/heads/main"] == recall(host, "secret-first")


def test_new_registered_key_works_and_members_admin_changes_survive(host):
    work = "/root/mol/w/pub"
    new_commit(host, work, "four")
    ok(host, f"cd {work} && git push -q {ssh_url('alpha', 'pub')} main", key="alpha2")
    # the collaborator alpha added in its gitolite-admin is still there and may push
    new_commit(host, work, "five")
    ok(host, f"cd {work} && git push -q {ssh_url('alpha', 'pub')} main", key="collab")
    admin = "/root/mol/w/admin"
    ok(host, f"cd {admin} && git pull -q", key="alpha")
    assert host.file(f"{admin}/keydir/collab.pub").exists
    assert host.file(f"{admin}/keydir/coophost/alpha@coophost-2.pub").exists
    log = ok(host, f"cd {admin} && git log --format='%an %s'")
    assert "coophost" in log and "collaborator" in log


def test_departed_unit_is_archived_not_deleted(host):
    assert not host.user("g-gamma").exists
    assert not host.file(f"/srv/git/units/{OWNERS['gamma']}").exists
    archived = ok(host, f"ls -d /srv/git/archive/{OWNERS['gamma']}.*")
    assert ok(host, f"ls {archived}/repositories") == "gitolite-admin.git"
    assert host.file("/srv/git/archive").mode == 0o700
    assert "git.gamma.test" not in host.file("/etc/nginx/conf.d/coophost-git.conf").content_string
    assert not host.file("/etc/coophost-git/gamma.htpasswd").exists
    assert not host.file("/run/coophost-git/gamma.sock").exists
    assert not host.service("coophost-git-fcgiwrap@gamma.socket").is_enabled
    assert not host.service("coophost-git-fcgiwrap@gamma.service").is_running


def test_beta_new_repo_cannot_be_created_while_suspended(host):
    work = fresh_tree(host, "beta-new", branch="trunk")
    new_commit(host, work, "x")
    assert sh(host, f"cd {work} && git push {ssh_url('beta', 'new')} trunk", key="beta").rc != 0
