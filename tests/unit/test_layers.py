"""The rooms of coophost/ and the one direction their imports go (docs/architecture.md).

Each module belongs to a layer; it may import from its own layer and the ones below, never
from a layer above (lazy imports inside functions included). A new module must be placed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "coophost"

# Lowest first. A prefix names a module or a whole package.
LAYERS: list[tuple[str, ...]] = [
    ("coophost", "coophost.errors", "coophost.fmt", "coophost.fsutil", "coophost.layout",
     "coophost.lock", "coophost.state"),
    ("coophost.registry",),
    ("coophost.secrets", "coophost.ssh", "coophost.sshroute", "coophost.enrol",
     "coophost.remote", "coophost.services", "coophost.backup.model", "coophost.backup.render",
     "coophost.dns.serve", "coophost.artifacts"),
    ("coophost.desired",),
    ("coophost.deploy", "coophost.dns"),
    ("coophost.members", "coophost.backup", "coophost.health"),
    ("coophost.lab",),
    ("coophost.cli", "coophost.__main__"),
]


def layer_of(module: str) -> int:
    """The layer of a module: the longest prefix that names it."""
    best, rank = "", -1
    for index, names in enumerate(LAYERS):
        for name in names:
            inside = module.startswith(name + ".") and name != "coophost"  # the root: itself
            if (module == name or inside) and len(name) > len(best):
                best, rank = name, index
    if rank < 0:
        raise AssertionError(f"{module} is in no layer of tests/unit/test_layers.py")
    return rank


def module_name(path: Path) -> str:
    """The dotted name of a file under coophost/."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """Every coophost module `path` imports (line, name), at top level or inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("coophost")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "coophost":
                found += [(node.lineno, "coophost" if a.name.startswith("__") else
                           f"coophost.{a.name}") for a in node.names]
            elif node.module.startswith("coophost"):
                found.append((node.lineno, node.module))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_never_run_up_the_layers(path: Path) -> None:
    here = module_name(path)
    mine = layer_of(here)
    upward = [f"line {line}: {name} (layer {layer_of(name)} > {mine})"
              for line, name in imports(path)
              if name != "coophost" and layer_of(name) > mine]
    assert not upward, f"{here} imports from a higher layer: {upward}"


def test_layer_checker_catches_an_upward_import(tmp_path: Path) -> None:
    assert layer_of("coophost.registry.edit") < layer_of("coophost.desired.render")
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from coophost.desired.render import quote\n")
    assert imports(fake) == [(2, "coophost.desired.render")]
