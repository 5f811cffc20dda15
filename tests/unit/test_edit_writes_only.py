"""registry/edit.py writes what its caller decided, under the lock its caller holds.

Placement is decided by the caller (registry/placement.py), which holds the co-op lock around
reading the co-op, deciding and writing. So edit.py neither places units nor takes the lock,
and every write refuses to run when its caller does not hold the lock.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coophost.lock import LockNotHeld, coop_lock, held, require_held
from coophost.registry import edit
from coophost.registry.loader import Loaded, load_registry

EDIT = Path(edit.__file__)

WRITES: dict[str, Callable[[Path, Loaded], Any]] = {
    "add_member": lambda root, loaded: edit.add_member(root, loaded, "new-one", "N",
                                                       "n@new-one.test", [], []),
    "update_member": lambda root, loaded: edit.update_member(root, loaded, "ada-books",
                                                             lambda doc: None),
    "replace_member_text": lambda root, loaded: edit.replace_member_text(
        root, loaded, "ada-books", "x", edit.read_member_text(root, "ada-books")),
    "edit_fields": lambda root, loaded: edit.edit_fields(root, loaded, "ada-books", name="N"),
    "set_status": lambda root, loaded: edit.set_status(root, loaded, "ada-books", "suspended"),
    "enable_service": lambda root, loaded: edit.enable_service(
        root, loaded, edit.draft_enable(loaded, "ada-books", "mail", {}), "mail", "h1"),
    "disable_service": lambda root, loaded: edit.disable_service(root, loaded, "ada-books",
                                                                 "mail"),
    "move_unit": lambda root, loaded: edit.move_unit(root, loaded, "ada-books", "mail", "h2"),
    "drop_moves": lambda root, loaded: edit.drop_moves(root, loaded, "ada-books", ["mail"]),
    "assign_lives": lambda root, loaded: edit.assign_lives(root, loaded),
    "remove_member": lambda root, loaded: edit.remove_member(root, "ada-books"),
    "add_host": lambda root, loaded: edit.add_host(root, loaded, "h4", address="127.0.0.1",
                                                   port=22, fqdn=None, ram_mb=1, disk_gb=1,
                                                   groups=()),
    "remove_host": lambda root, loaded: edit.remove_host(root, loaded, "h3"),
    "record_placements": lambda root, loaded: edit.record_placements(
        root, {("ada-books", "mail"): "h1"}),
}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".coophost" not in p.parts}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_a_write_without_the_lock_raises_and_writes_nothing(coop: Path, name: str) -> None:
    loaded = load_registry(coop, need_hosts=False)
    before = _snapshot(coop)
    assert not held(coop)
    with pytest.raises(LockNotHeld, match=r"caller must hold the co-op lock"):
        WRITES[name](coop, loaded)
    assert _snapshot(coop) == before


def test_every_write_of_edit_py_is_tried_above() -> None:
    """A new public function of edit.py that writes a file must be listed in WRITES."""
    writing = {"write_member", "update_member", "_update_hosts", "_write_doc",
               "replace_if_unchanged",
               "replace", "unlink", "link"}
    writers = set()
    for node in ast.parse(EDIT.read_text()).body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            called = {n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
                      for n in ast.walk(node) if isinstance(n, ast.Call)}
            if called & writing:
                writers.add(node.name)
    assert "record_placements" in writers and "remove_member" in writers
    assert writers - {"write_member"} <= set(WRITES), writers - set(WRITES)


def test_held_tracks_this_process_locks(tmp_path: Path) -> None:
    assert not held(tmp_path)
    with coop_lock(tmp_path, purpose="outer"):
        assert held(tmp_path)
        with coop_lock(tmp_path, purpose="nested"):
            assert held(tmp_path)
        assert held(tmp_path)
        assert not held(tmp_path, "requests.lock")
        require_held(tmp_path, "test")
    assert not held(tmp_path)
    with pytest.raises(LockNotHeld):
        require_held(tmp_path, "test")


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_edit_py_places_nothing_and_locks_nothing() -> None:
    """Deciding and writing apart: placement and the lock belong to edit.py's callers."""
    imported = _imported(EDIT)
    assert not {n for n in imported if n.startswith("coophost.registry.placement")}, imported
    assert "coophost.lock.coop_lock" not in imported
    assert "coophost.registry.loader.load_registry" not in imported  # the caller reads


def test_the_import_check_sees_a_placement_import(tmp_path: Path) -> None:
    fake = tmp_path / "edit.py"
    fake.write_text("def f():\n    from coophost.registry import placement\n")
    assert "coophost.registry.placement" in _imported(fake)


def test_an_enable_refuses_a_file_changed_since_its_draft_was_read(coop: Path) -> None:
    """The caller decides on the draft; the write compares the file with the draft's bytes."""
    from coophost.errors import ConflictError

    member_file = coop / "members" / "ada-books.yml"
    with coop_lock(coop):
        loaded = load_registry(coop, need_hosts=False)
        draft = edit.draft_enable(loaded, "ada-books", "mail", {"quota_mb": 300})
        member_file.write_text(member_file.read_text().replace("status: active",
                                                               "status: suspended"))
        with pytest.raises(ConflictError, match=r"members/ada-books\.yml changed"):
            edit.enable_service(coop, loaded, draft, "mail", "h1")
    saved = member_file.read_text()
    assert "status: suspended" in saved and "quota_mb: 300" not in saved
