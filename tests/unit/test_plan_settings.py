"""The plan says what changed in a unit (old -> new), secrets masked, from what was applied."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from coophost.desired.settings import (
    MASK,
    ROLE_KEY,
    SettingChange,
    changes,
    decode,
    encode,
    explain,
)


def test_changes_lists_changed_added_and_removed_keys_in_order() -> None:
    old = {"settings.quota_mb": "1200", "settings.mailboxes": '["ada"]', "member.status": '"a"'}
    new = {"settings.quota_mb": "2048", "settings.mailboxes": '["ada"]', "settings.x": "1"}
    found = changes(old, new)
    assert found == [SettingChange("member.status", '"a"', None),
                     SettingChange("settings.quota_mb", "1200", "2048"),
                     SettingChange("settings.x", None, "1")]
    assert [c.as_text() for c in found] == ['member.status: "a" (removed)',
                                            "settings.quota_mb: 1200 -> 2048",
                                            "settings.x: 1 (added)"]
    assert changes(None, new) == [] and changes(new, new) == []


def test_a_stored_fingerprint_reads_back_and_damage_means_unknown() -> None:
    print_ = {"settings.quota_mb": "1200", ROLE_KEY: "abc"}
    assert decode(encode(print_)) == print_
    for bad in (None, "", "not json", "[1, 2]", '{"a": 1}'):
        assert decode(bad) is None
    key = ("h1", "ada", "mail")
    assert explain([key], {key: "garbage"}, {("ada", "mail"): print_}) == {key: None}
    assert explain([key], {}, {("ada", "mail"): print_}) == {key: None}
    assert explain([key], {key: encode(print_)}, {}) == {key: None}
    assert explain([key], {key: encode(print_)}, {("ada", "mail"): print_}) == {key: []}


def test_plan_shows_each_changed_setting_old_to_new(coop: Path, cli, record_applied) -> None:
    record_applied(coop)
    assert cli("-i", str(coop), "service", "enable", "ada-books", "mail",
               "--set", "quota_mb=3000", "--set", "mailboxes=[ada, orders, shop]")[0] == 0
    assert cli("-i", str(coop), "member", "suspend", "dune-press")[0] == 0
    code, out, err = cli("-i", str(coop), "plan")
    assert code == 1, err
    lines = out.splitlines()
    ada = lines.index(next(ln for ln in lines if "~ ada-books/mail: change" in ln))
    assert lines[ada + 1:ada + 3] == [
        '      settings.mailboxes: ["ada", "orders"] -> ["ada", "orders", "shop"]',
        "      settings.quota_mb: 1024 -> 3000"], out
    assert '      member.status: "active" -> "suspended"' in lines, out
    assert "h2: 1 unit change(s)" in lines and "h1: 1 unit change(s)" in lines, out
    code, out, _ = cli("-i", str(coop), "plan", "--json")
    by_unit = {f"{c['member']}/{c['service']}": c for c in json.loads(out)["changes"]}
    assert by_unit["ada-books/mail"]["settings"] == [
        {"key": "settings.mailboxes", "old": '["ada", "orders"]',
         "new": '["ada", "orders", "shop"]'},
        {"key": "settings.quota_mb", "old": "1024", "new": "3000"}]
    assert by_unit["dune-press/mail"]["settings"] == [
        {"key": "member.status", "old": '"active"', "new": '"suspended"'}]


def test_plan_says_when_what_changed_was_not_recorded(coop: Path, cli, record_applied) -> None:
    record_applied(coop)
    with sqlite3.connect(coop / ".coophost" / "state.db") as conn:  # applied before version 4
        conn.execute("UPDATE applied_unit SET settings = NULL")
    assert cli("-i", str(coop), "member", "suspend", "dune-press")[0] == 0
    code, out, _ = cli("-i", str(coop), "plan")
    assert code == 1
    assert "(what changed is not known: its settings were not recorded" in out
    code, out, _ = cli("-i", str(coop), "plan", "--json")
    [change] = json.loads(out)["changes"]
    assert change["settings"] is None


def test_no_secret_and_no_sensitive_setting_reaches_a_fingerprint(coop: Path, record_applied,
                                                                  cli) -> None:
    from coophost.desired.settings import fingerprint
    from coophost.registry.loader import load_registry
    from coophost.secrets import SecretStore

    record_applied(coop)
    assert cli("-i", str(coop), "render")[0] == 0  # generates every unit's secrets
    loaded = load_registry(coop)
    store = SecretStore(coop, loaded.registry.coop.vault, loaded.catalogue)
    texts = []
    with sqlite3.connect(coop / ".coophost" / "state.db") as conn:
        texts = [row[0] for row in conn.execute("SELECT settings FROM applied_unit")]
    assert texts and all(texts)
    member = loaded.registry.members["ada-books"]
    checked = 0
    for slug, found in loaded.registry.members.items():
        for name, value in flat_secrets(store.reveal(found.owner)):
            assert len(value) >= 8, (slug, name)
            assert not any(value in text for text in texts), (slug, name)
            checked += 1
    assert checked >= 8  # every mailbox's password and every DKIM key, at least
    service = loaded.catalogue.services["mail"]
    member.services["mail"]["api_token"] = "s3cr3t-v4lue-never-shown"  # type: ignore[index]
    print_ = fingerprint(member, service, "v1")
    assert print_["settings.api_token"] == MASK
    assert "s3cr3t" not in encode(print_)


def flat_secrets(values: object, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(values, dict):
        return [item for key, value in values.items()
                for item in flat_secrets(value, f"{prefix}.{key}")]
    return [(prefix, str(values))] if isinstance(values, str) else []
