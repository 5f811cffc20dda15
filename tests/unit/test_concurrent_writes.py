"""A read-modify-write of a registry file never overwrites a change saved since it read the file.

Each test plays the concurrent writer at the worst moment (while the editor is open, or between
coophost's read and its rename) and checks that the other writer's change is kept, coophost
refuses with exit 3, and what the person typed is not lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coophost.errors import ConflictError
from coophost.lock import coop_lock
from coophost.members.requests import _decide, file_request, get_request
from coophost.registry import edit
from coophost.registry.loader import load_registry

SUSPEND = "s/^status: active/status: suspended/"


def test_member_edit_refuses_when_the_file_changed_while_the_editor_was_open(
        coop: Path, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    member_file = coop / "members" / "ada-books.yml"
    editor = tmp_path / "editor.sh"
    # The "editor" changes the contact in its copy while another writer suspends the member.
    editor.write_text("#!/bin/sh\n"
                      f"sed -i '{SUSPEND}' \"$MEMBER_FILE\"\n"
                      "echo \"# a note written at $(date +%s%N)\" >> \"$MEMBER_FILE\"\n"
                      "sed -i 's/^contact: .*/contact: new@ada-books.test/' \"$1\"\n")
    editor.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(editor))
    monkeypatch.setenv("MEMBER_FILE", str(member_file))
    code, _, err = cli("-i", str(coop), "member", "edit", "ada-books")
    assert code == 3, err
    assert "members/ada-books.yml was changed while the editor was open" in err
    saved = member_file.read_text()
    assert "status: suspended" in saved               # the concurrent change is kept
    assert "contact: ada@ada-books.test" in saved     # the edit did not overwrite it
    kept = coop / ".coophost" / "rejected" / "ada-books.yml"
    assert "contact: new@ada-books.test" in kept.read_text()  # nothing typed is lost
    assert str(kept) in err and "re-apply" in err
    code, _, err = cli("-i", str(coop), "member", "edit", "ada-books")  # again: kept beside
    assert code == 3
    assert "contact: new@ada-books.test" in kept.read_text()
    assert "contact: new@ada-books.test" in kept.with_name("ada-books.1.yml").read_text()


def _write_meanwhile(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def test_a_field_edit_refuses_a_change_made_between_its_read_and_its_write(coop: Path) -> None:
    member_file = coop / "members" / "ada-books.yml"

    def change(doc: Any) -> None:
        doc["name"] = "Renamed"
        _write_meanwhile(member_file, "status: active", "status: suspended")

    with pytest.raises(ConflictError, match=r"members/ada-books\.yml changed"), coop_lock(coop):
        edit.update_member(coop, load_registry(coop, need_hosts=False), "ada-books", change)
    saved = member_file.read_text()
    assert "status: suspended" in saved and "Renamed" not in saved


def test_a_deploys_placement_write_refuses_a_concurrent_change(
        coop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    member_file = coop / "members" / "bread-coop.yml"
    real = edit.rt_dump

    def dump_then_change(doc: Any) -> str:
        text = real(doc)
        _write_meanwhile(member_file, "status: active", "status: suspended")
        return text

    monkeypatch.setattr(edit, "rt_dump", dump_then_change)
    with pytest.raises(ConflictError, match=r"members/bread-coop\.yml changed"), coop_lock(coop):
        edit.record_placements(coop, {("bread-coop", "mail"): "h1"})
    assert "status: suspended" in member_file.read_text()


def test_hosts_yml_write_refuses_a_concurrent_change(
        coop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = coop / "hosts.yml"
    real = edit.rt_dump

    def dump_then_change(doc: Any) -> str:
        text = real(doc)
        hosts.write_text(hosts.read_text() + "# a sysadmin's note\n")
        return text

    monkeypatch.setattr(edit, "rt_dump", dump_then_change)
    with pytest.raises(ConflictError, match=r"hosts\.yml changed"), coop_lock(coop):
        edit.add_host(coop, load_registry(coop, need_hosts=False), "h4", address="127.0.0.1",
                      port=40004, fqdn=None, ram_mb=1024, disk_gb=10, groups=("mail",))
    assert hosts.read_text().endswith("# a sysadmin's note\n")
    assert "h4" not in hosts.read_text()


def test_a_request_decision_refuses_a_concurrent_change(
        coop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import coophost.members.requests as requests

    filed = file_request(coop, "ada-books", "mail", {"quota_mb": 100}, "member ada-books")
    real = requests.now

    def now_then_change() -> str:
        [path] = (coop / "requests").rglob(f"{filed.id:05d}.yml")
        path.write_text(path.read_text().replace("quota_mb: 100", "quota_mb: 200"))
        return real()

    monkeypatch.setattr(requests, "now", now_then_change)
    with pytest.raises(ConflictError, match=f"{filed.id:05d}.yml changed"):
        _decide(coop, filed.id, "alice", "denied", "denied", "no")
    monkeypatch.setattr(requests, "now", real)
    assert get_request(coop, filed.id).settings == {"quota_mb": 200}
    assert get_request(coop, filed.id).state == "pending"
