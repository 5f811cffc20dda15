"""Third phase: beta active again; what it had works again, nothing was lost."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from gitmol import (
    OWNERS,
    http_status,
    https_url,
    new_commit,
    ok,
    password,
    recall,
    refs,
    ssh_url,
)


def test_resumed_member_pushes_over_ssh_again(host):
    work = "/root/mol/w/beta-pub"
    ok(host, f"cd {work} && git push -q {ssh_url('beta', 'site')} trunk", key="beta")
    bare = f"/srv/git/units/{OWNERS['beta']}/repositories/site.git"
    tip = refs(host, bare)["refs/heads/trunk"]
    history = ok(host, f"git --git-dir={bare} rev-list {tip}")
    assert recall(host, "beta-first") in history.split()


def test_resumed_member_logs_in_over_https_again(host):
    url = "https://git.beta.test/site.git/info/refs?service=git-receive-pack"
    assert http_status(host, url, "beta", password("beta"))[0] == 200
    work = "/root/mol/w/beta-pub"
    new_commit(host, work, "after-resume")
    ok(host, f"cd {work} && git push -q {https_url('beta', 'site', password('beta'))} trunk")


def test_alpha_keeps_everything(host):
    bare = f"/srv/git/units/{OWNERS['alpha']}/repositories/pub.git"
    history = ok(host, f"git --git-dir={bare} rev-list main").split()
    for name in ("pub-first", "pub-second", "pub-third"):
        assert recall(host, name) in history
