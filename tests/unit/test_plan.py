"""The plan's diff: desired units and host hashes against what was last applied."""

from __future__ import annotations

import pytest

from coophost.desired.plan import diff, only
from coophost.state import Applied

D = {("h1", "a", "mail"): "A1", ("h2", "b", "mail"): "B1"}
HOSTS = {"h1": "H1", "h2": "H2"}

CASES = [
    ("nothing applied yet: everything is added",
     Applied(), [("h1", "a", "mail", "add"), ("h2", "b", "mail", "add")], True),
    ("all applied: nothing pending",
     Applied(units=dict(D), hosts=dict(HOSTS)), [], False),
    ("a unit's hash changed",
     Applied(units={**D, ("h1", "a", "mail"): "A0"}, hosts=dict(HOSTS)),
     [("h1", "a", "mail", "change")], True),
    ("a unit no longer desired",
     Applied(units={**D, ("h1", "c", "git"): "C1"}, hosts=dict(HOSTS)),
     [("h1", "c", "git", "remove")], True),
    ("a unit moved between hosts",
     Applied(units={("h1", "a", "mail"): "A1", ("h1", "b", "mail"): "B1"}, hosts=dict(HOSTS)),
     [("h1", "b", "mail", "remove"), ("h2", "b", "mail", "add")], True),
    ("only a host's own vars changed",
     Applied(units=dict(D), hosts={"h1": "H1", "h2": "old"}), [], True),
]


@pytest.mark.parametrize(("why", "applied", "expected", "pending"), CASES,
                         ids=[c[0] for c in CASES])
def test_diff(why: str, applied: Applied, expected: list, pending: bool) -> None:
    plan = diff(D, HOSTS, applied)
    assert [(c.host, c.member, c.service, c.action) for c in plan.changes] == expected
    assert plan.pending is pending


def test_move_is_labelled_both_ways() -> None:
    applied = Applied(units={("h1", "a", "mail"): "A1", ("h1", "b", "mail"): "B1"},
                      hosts=dict(HOSTS))
    moves = {(c.host, c.action): c.moved for c in diff(D, HOSTS, applied).changes}
    assert moves == {("h1", "remove"): "h2", ("h2", "add"): "h1"}


def test_filters() -> None:
    plan = diff(D, HOSTS, Applied())
    assert [c.member for c in only(plan, member="b").changes] == ["b"]
    assert [c.host for c in only(plan, host="h1").changes] == ["h1"]
    assert only(plan, member="nobody").pending is False


def test_json_shape() -> None:
    data = diff(D, HOSTS, Applied()).as_json()
    assert data["pending"] is True
    assert set(data["changes"][0]) == {"host", "member", "service", "action", "hash",
                                       "applied_hash", "moved"}
    assert data["hosts"]["h1"]["status"] == "new"
