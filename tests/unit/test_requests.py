"""Requests and approvals, the audit log, and departure bookkeeping (registry files only)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from coophost.errors import UsageError, ValidationError
from coophost.lifecycle import due_for_purge, purge, set_status
from coophost.registry.loader import load_registry
from coophost.requests import (
    approve_request,
    cancel_request,
    deny_request,
    file_request,
    get_request,
    load_requests,
    read_audit,
    shown_state,
)

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
