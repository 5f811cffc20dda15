"""roles/tls's coophost-vhost-certs: a departed vhost's certificate stays while a deploy's
service stages may still name it (--keep-departed), and goes in the run after them."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

HELPER = Path(__file__).resolve().parents[2] / "roles" / "tls" / "files" / "coophost-vhost-certs"


def _helper() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("coophost_vhost_certs", str(HELPER))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, dict, list[str]]:
    module = _helper()
    deleted: list[str] = []
    monkeypatch.setattr(module, "LIVE", str(tmp_path / "live"))
    monkeypatch.setattr(module, "delete_lineage", lambda name: deleted.append(name))
    monkeypatch.setattr(module, "reload_services", lambda services: [])
    for folder in ("vhosts", "requests", "live/gone.example.test", "live/host.example.test"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "vhosts" / "gone.example.test").symlink_to(tmp_path / "live/gone.example.test")
    (tmp_path / "requests" / "gone.example.test.request").write_text(json.dumps({}))
    config = {"vhost_dir": str(tmp_path / "vhosts"), "request_dir": str(tmp_path / "requests"),
              "standin": str(tmp_path / "live/host.example.test"), "vhosts": [],
              "server": "https://acme.example.test/dir", "key_type": "ecdsa",
              "pending_file": str(tmp_path / "pending"), "reload_services": ["nginx"]}
    return module, config, deleted


def test_keep_departed_leaves_the_certificate_and_says_so(helper, tmp_path: Path) -> None:
    module, config, deleted = helper
    result = module.run(config, remove_departed=False)
    assert result["departed"] == ["gone.example.test"] and result["removed"] == []
    assert (tmp_path / "vhosts" / "gone.example.test").is_symlink()
    assert (tmp_path / "requests" / "gone.example.test.request").exists()
    assert deleted == []


def test_the_run_after_the_services_removes_it(helper, tmp_path: Path) -> None:
    module, config, deleted = helper
    result = module.run(config)
    assert result["removed"] == ["gone.example.test"] and result["changed"] is True
    assert not (tmp_path / "vhosts" / "gone.example.test").exists()
    assert not (tmp_path / "requests" / "gone.example.test.request").exists()
    assert deleted == ["gone.example.test"]
