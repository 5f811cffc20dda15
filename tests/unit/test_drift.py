"""`coophost drift`'s verdicts from check-mode outcomes (pure)."""

from __future__ import annotations

from coophost.deploy.drift import verdict


def test_a_clean_host_with_changes_in_check_mode_has_drifted() -> None:
    found = verdict("h1", ["--all"], "ok", {"changed": 2, "ok": 40}, "")
    assert (found.status, found.changed) == ("drifted", 2)


def test_a_clean_host_without_changes_is_ok() -> None:
    assert verdict("h1", ["--all"], "ok", {"changed": 0, "ok": 42}, "").status == "ok"


def test_a_host_with_pending_changes_is_not_judged() -> None:
    found = verdict("h2", ["host: changed", "ada/mail: change"], "ok", {"changed": 5}, "")
    assert found.status == "pending" and "ada/mail: change" in found.detail


def test_an_unreachable_host_is_reported_as_such() -> None:
    found = verdict("h3", ["--all"], "unreachable", {}, "ssh: timed out")
    assert (found.status, found.detail) == ("unreachable", "ssh: timed out")
