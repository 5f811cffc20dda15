"""Requests and approvals, the audit log, and departure bookkeeping (registry files only)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from coophost.errors import UsageError, ValidationError
from coophost.members.audit import read_audit
from coophost.members.lifecycle import due_for_purge, purge, set_status
from coophost.members.requests import (
    approve_request,
    cancel_request,
    deny_request,
    file_request,
    get_request,
    load_requests,
    shown_state,
)
from coophost.registry.loader import load_registry

# Requests are tested with nextcloud (a service with settings mail lacks), still coming.
pytestmark = pytest.mark.usefixtures("coming_services_available")


def member(coop: Path, slug: str):  # type: ignore[no-untyped-def]
    return load_registry(coop, need_hosts=False, use_cache=False).registry.members[slug]


def test_file_approve_updates_the_member_and_leaves_an_audit_trail(coop: Path) -> None:
    request = file_request(coop, "ada-books", "nextcloud", {"quota_gb": 3}, "member ada-books")
    assert (request.id, request.state) == (1, "pending")
    assert "nextcloud" not in member(coop, "ada-books").services
    approved, host = approve_request(coop, 1, "alice", "welcome")
    assert approved.state == "approved"
    ada = member(coop, "ada-books")
    assert ada.services["nextcloud"]["quota_gb"] == 3
    assert ada.placement["nextcloud"] == host
    stored = get_request(coop, 1)
    assert [h["action"] for h in stored.history] == ["filed", "approved"]
    assert stored.history[1]["by"] == "alice" and stored.history[1]["why"] == "welcome"
    actions = [(e["action"], e["by"]) for e in read_audit(coop)]
    assert actions == [("request filed", "member ada-books"), ("request approved", "alice")]
    assert shown_state(stored, [("ada-books", "nextcloud")]) == "deployed"
    assert shown_state(stored, []) == "approved"


def test_quota_over_the_ceiling_is_refused_when_filed(coop: Path) -> None:
    with pytest.raises(ValidationError, match="at most 20") as caught:
        file_request(coop, "ada-books", "nextcloud", {"quota_gb": 21}, "member ada-books")
    assert "services.nextcloud.quota_gb" in str(caught.value)
    assert load_requests(coop) == []
    assert not (coop / "audit.log").exists()


def test_a_service_not_offered_to_members_is_refused(coop: Path) -> None:
    with pytest.raises(UsageError, match="not offered to members"):
        file_request(coop, "ada-books", "git", {}, "member ada-books")


def test_only_active_members_may_request_and_approval_rechecks(coop: Path) -> None:
    file_request(coop, "ada-books", "nextcloud", {}, "member ada-books")
    set_status(coop, "ada-books", "suspended", "alice")
    with pytest.raises(UsageError, match="suspended"):
        file_request(coop, "ada-books", "mail", {"quota_mb": 10}, "member ada-books")
    with pytest.raises(UsageError, match="suspended"):
        approve_request(coop, 1, "alice")
    assert get_request(coop, 1).state == "pending"
    assert "nextcloud" not in member(coop, "ada-books").services


def test_deny_needs_a_reason_and_decisions_are_final(coop: Path) -> None:
    file_request(coop, "ada-books", "nextcloud", {}, "member ada-books")
    with pytest.raises(UsageError, match="--why"):
        deny_request(coop, 1, "alice", "  ")
    denied = deny_request(coop, 1, "alice", "no room this month")
    assert (denied.state, denied.why) == ("denied", "no room this month")
    with pytest.raises(UsageError, match="denied, not pending"):
        approve_request(coop, 1, "bob")


def test_a_member_cancels_only_its_own_requests(coop: Path) -> None:
    file_request(coop, "ada-books", "nextcloud", {}, "member ada-books")
    with pytest.raises(UsageError, match="no request 1"):
        cancel_request(coop, 1, "bread-coop", "member bread-coop")
    assert cancel_request(coop, 1, "ada-books", "member ada-books").state == "canceled"


def test_one_pending_request_per_service(coop: Path) -> None:
    file_request(coop, "ada-books", "nextcloud", {}, "member ada-books")
    with pytest.raises(UsageError, match="still pending"):
        file_request(coop, "ada-books", "nextcloud", {"quota_gb": 2}, "member ada-books")


def test_requests_cli_lists_and_approves(coop: Path, cli) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli("-i", str(coop), "requests", "file", "dune-press", "nextcloud",
                         "--set", "max_users=3")
    assert code == 0, err
    code, out, _ = cli("-i", str(coop), "requests", "list", "--json")
    rows = json.loads(out)
    assert [(r["id"], r["member"], r["state"]) for r in rows] == [(1, "dune-press", "pending")]
    code, out, err = cli("-i", str(coop), "requests", "approve", "1")
    assert code == 0, err
    assert "placed on" in out
    code, out, err = cli("-i", str(coop), "requests", "deny", "1", "--why", "late")
    assert code == 2 and "approved, not pending" in err


def test_departed_member_needs_a_date_and_purge_waits_for_retention(coop: Path) -> None:
    path = coop / "members" / "ada-books.yml"
    text = path.read_text()
    path.write_text(text.replace("status: active", "status: departed"))
    with pytest.raises(ValidationError, match="departure date"):
        load_registry(coop, need_hosts=False, use_cache=False)
    path.write_text(text.replace("status: active", "status: departed\ndeparted_on: 2026-11-01"))
    assert due_for_purge(coop, dt.date(2026, 11, 14)) == []  # 13 days < departed_days 14
    assert [m.slug for m in due_for_purge(coop, dt.date(2026, 11, 15))] == ["ada-books"]
    assert purge(coop, "alice", dt.date(2026, 11, 15)) == ["ada-books"]
    ada = member(coop, "ada-books")
    assert (ada.services, ada.placement, ada.status) == ({}, {}, "departed")
    assert read_audit(coop)[-1]["action"] == "member services removed"
    with pytest.raises(UsageError, match="departed"):
        set_status(coop, "ada-books", "active", "alice")


def test_departed_on_is_refused_for_an_active_member(coop: Path) -> None:
    path = coop / "members" / "ada-books.yml"
    path.write_text(path.read_text().replace("status: active",
                                             "status: active\ndeparted_on: 2026-11-01"))
    with pytest.raises(ValidationError, match="only a departed member"):
        load_registry(coop, need_hosts=False, use_cache=False)


# ---- open requests: a ceiling per member; listing reads only the files that can matter ----

def _set_open_requests(coop: Path, ceiling: int) -> None:
    coop_yml = coop / "coop.yml"
    text = coop_yml.read_text()
    assert "\nallowances:\n" in text
    coop_yml.write_text(text.replace("\nallowances:\n",
                                     f"\nallowances:\n  open_requests: {ceiling}\n"))


def test_a_member_has_at_most_the_ceiling_of_open_requests(coop: Path) -> None:
    from coophost.members.requests import Request, _save

    _set_open_requests(coop, 1)
    _save(coop, Request(1, "ada-books", "git", {}, "pending", "2026-01-01T00:00:00Z",
                        "member ada-books"))  # an older pending request
    with pytest.raises(UsageError, match=r"allowances\.open_requests: 1") as caught:
        file_request(coop, "ada-books", "mail", {"quota_mb": 100}, "member ada-books")
    assert "ada-books already has 1 open requests" in str(caught.value)
    assert len(load_requests(coop, "ada-books")) == 1
    file_request(coop, "bread-coop", "mail", {"quota_mb": 100}, "member bread-coop")  # another
    cancel_request(coop, 1, "ada-books", "member ada-books")
    file_request(coop, "ada-books", "mail", {"quota_mb": 100}, "member ada-books")  # room again


def test_the_default_ceiling_is_ten_open_requests(coop: Path) -> None:
    from coophost.members.requests import Request, _save

    assert load_registry(coop, need_hosts=False).registry.coop.allowances["open_requests"] == 10
    for number in range(1, 11):
        _save(coop, Request(number, "ada-books", "git", {}, "pending", "2026-01-01T00:00:00Z",
                            "member ada-books"))
    with pytest.raises(UsageError, match="already has 10 open requests"):
        file_request(coop, "ada-books", "mail", {"quota_mb": 100}, "member ada-books")


def test_the_open_requests_ceiling_is_checked_in_coop_yml(coop: Path, cli) -> None:
    _set_open_requests(coop, -1)
    code, _, err = cli("-i", str(coop), "member", "list")
    assert code == 2 and "coop.yml: allowances.open_requests: -1: must be at least 0" in err


def test_listing_open_requests_reads_no_decided_request(coop: Path) -> None:
    file_request(coop, "ada-books", "mail", {"quota_mb": 100}, "member ada-books")
    file_request(coop, "bread-coop", "mail", {"quota_mb": 100}, "member bread-coop")
    deny_request(coop, 2, "alice", "not now")
    closed = coop / "requests" / "closed" / "bread-coop" / "00002.yml"
    assert closed.is_file()
    assert not (coop / "requests" / "open" / "bread-coop" / "00002.yml").exists()
    closed.write_text("state: [not, read]\n")  # a file that fails if it is ever read
    assert [r.id for r in load_requests(coop, closed=False)] == [1]
    assert [r.id for r in load_requests(coop, "ada-books")] == [1]
    cancel_request(coop, 1, "ada-books", "member ada-books")
    file_request(coop, "ada-books", "mail", {"quota_mb": 200}, "member ada-books")  # reads none
    assert [r.id for r in load_requests(coop, "ada-books")] == [1, 3]
    with pytest.raises(ValidationError, match=r"requests/closed/bread-coop/00002\.yml"):
        load_requests(coop)  # the whole history does read it (and names it)


def test_member_status_reads_only_its_own_requests(coop: Path) -> None:
    import io

    from coophost.members.shell import run

    file_request(coop, "bread-coop", "mail", {"quota_mb": 100}, "member bread-coop")
    (coop / "requests" / "open" / "bread-coop" / "00001.yml").write_text("id: [broken]\n")
    file_request(coop, "ada-books", "mail", {"quota_mb": 100}, "member ada-books")
    out = io.BytesIO()
    assert run(coop, "ada-books", "status", out) == 0
    assert "request 2: mail pending" in out.getvalue().decode()


def test_flat_layout_requests_are_read_and_moved_into_place(coop: Path) -> None:
    import yaml

    folder = coop / "requests"
    folder.mkdir()
    for number, state in ((1, "denied"), (2, "pending")):
        (folder / f"0000{number}.yml").write_text(yaml.safe_dump({
            "id": number, "member": "ada-books", "service": "git", "settings": {},
            "state": state, "filed": "2026-01-01T00:00:00Z", "filed_by": "member ada-books",
            "history": []}))
    assert [(r.id, r.state) for r in load_requests(coop)] == [(1, "denied"), (2, "pending")]
    assert get_request(coop, 2).state == "pending"
    file_request(coop, "ada-books", "mail", {"quota_mb": 100}, "member ada-books")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.yml")) == [
        "closed/ada-books/00001.yml", "open/ada-books/00002.yml", "open/ada-books/00003.yml"]
    cancel_request(coop, 2, "ada-books", "member ada-books")
    assert (folder / "closed" / "ada-books" / "00002.yml").is_file()


def test_a_decided_request_left_in_open_is_moved_by_the_next_filing(coop: Path) -> None:
    """A crash between rewriting a decided request and moving it leaves it in open/."""
    from coophost.members.requests import Request, _save, request_path

    _save(coop, Request(1, "ada-books", "git", {}, "pending", "2026-01-01T00:00:00Z",
                        "member ada-books"))
    stranded = coop / "requests" / "open" / "ada-books" / "00001.yml"
    stranded.write_text(stranded.read_text().replace("state: pending", "state: denied"))
    assert load_requests(coop, "ada-books", closed=False) == []  # not counted as open
    file_request(coop, "ada-books", "mail", {"quota_mb": 100}, "member ada-books")
    assert not stranded.exists()
    assert request_path(coop, get_request(coop, 1)).is_file()
    assert get_request(coop, 1).state == "denied"
