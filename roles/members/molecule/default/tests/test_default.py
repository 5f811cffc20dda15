"""The members role: an account and a private folder per member, isolated from each other."""

import pytest


@pytest.mark.parametrize("slug", ["ada-books", "bread-coop"])
def test_member_account_cannot_log_in(host, slug):
    user = host.user(f"m-{slug}")
    assert user.exists
    assert user.shell == "/usr/sbin/nologin"
    assert user.uid < 1000, "member accounts are system accounts"


@pytest.mark.parametrize("slug", ["ada-books", "bread-coop"])
def test_member_folder_is_private(host, slug):
    folder = host.file(f"/srv/members/{slug}")
    assert folder.is_directory
    assert folder.user == f"m-{slug}" and folder.group == f"m-{slug}"
    assert folder.mode == 0o750


def test_one_account_per_member_even_with_several_services(host):
    lines = host.file("/etc/sysusers.d/coophost-members.conf").content_string.splitlines()
    assert sum(1 for line in lines if line.startswith("u m-ada-books ")) == 1


def test_members_cannot_read_each_other(host):
    with host.sudo():
        host.run_expect([0], "install -o m-ada-books -m 0600 /dev/null /srv/members/ada-books/x")
        denied = host.run("runuser -u m-bread-coop -- cat /srv/members/ada-books/x")
        allowed = host.run("runuser -u m-ada-books -- cat /srv/members/ada-books/x")
    assert denied.rc != 0 and "Permission denied" in denied.stderr
    assert allowed.rc == 0
