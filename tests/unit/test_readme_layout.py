"""The README's layout section names every folder of the tree, and nothing that is not there."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOP = ("coophost", "services", "roles", "playbooks", "inventories", "tests", "bench", "docs",
       "scripts")


def layout_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```\n", 2)[1]


def named(block: str) -> tuple[set[str], set[str]]:
    """Top-level folders and coophost/ subpackages the block names (by indentation)."""
    top, sub = set(), set()
    for line in block.splitlines():
        match = re.match(r"^( *)([\w.]+)/ ", line + " ")
        if match:
            (sub if match.group(1) else top).add(match.group(2))
    return top, sub


def test_the_layout_names_every_folder_and_every_package() -> None:
    top, sub = named(layout_block())
    assert set(TOP) <= top, set(TOP) - top
    assert all((REPO / name).is_dir() for name in top), [n for n in top if not (REPO / n).is_dir()]
    packages = {p.name for p in (REPO / "coophost").iterdir()
                if p.is_dir() and any(p.glob("*.py"))}
    assert sub == packages, (sub ^ packages)


def test_the_layout_check_notices_a_folder_left_out() -> None:
    top, sub = named("coophost/  x\n  cli/  y\nroles/  z\n")
    assert top == {"coophost", "roles"} and sub == {"cli"}
    assert not set(TOP) <= top
