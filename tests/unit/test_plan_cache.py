"""The parse cache is only a cache: a warm compute always equals a cold one, whatever changed."""

from __future__ import annotations

import marshal
import os
import time
from pathlib import Path

import pytest

from coophost.desired.units import SUMMARY_CACHE, Desired, compute
from coophost.errors import ValidationError
from coophost.layout import STATE_DIR
from coophost.registry.cache import RACY_NS, ParseCache

OLD_NS = 1_600_000_000 * 10**9  # an mtime far outside the racy window


def _age(coop: Path) -> None:
    """Give every member file an old mtime, as files not touched for a while have."""
    for path in (coop / "members").iterdir():
        os.utime(path, ns=(OLD_NS, OLD_NS))


def _same(warm: Desired, cold: Desired) -> None:
    assert warm.rows == cold.rows
    assert warm.host_hashes == cold.host_hashes
    assert warm.usage == cold.usage
    assert warm.units == cold.units
    assert warm.placement == cold.placement


def _cache(coop: Path) -> Path:
    return coop / STATE_DIR / SUMMARY_CACHE


def test_warm_compute_reuses_the_placement_and_equals_a_cold_one(
        coop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _age(coop)
    compute(coop)
    import coophost.desired.units as desired

    def fail(*_args: object) -> None:
        raise AssertionError("placement recomputed although nothing changed")

    monkeypatch.setattr(desired, "_place_and_hash", fail)
    monkeypatch.setattr(desired, "scan_members", fail)
    warm = compute(coop)
    monkeypatch.undo()
    _same(warm, compute(coop, use_cache=False))


@pytest.mark.parametrize("change", ["edit", "add", "remove", "hosts"])
def test_every_kind_of_change_is_seen(coop: Path, change: str) -> None:
    _age(coop)
    compute(coop)
    compute(coop)  # warm
    members = coop / "members"
    if change == "edit":
        path = members / "ada-books.yml"
        path.write_text(path.read_text().replace("quota_mb: 1024", "quota_mb: 2048"))
        os.utime(path, ns=(OLD_NS + 10**9, OLD_NS + 10**9))
    elif change == "add":
        text = (members / "ada-books.yml").read_text().replace("ada-books", "ann-books")
        (members / "ann-books.yml").write_text(text.replace("Ada's", "Ann's"))
    elif change == "remove":
        (members / "dune-press.yml").unlink()
    else:
        hosts = coop / "hosts.yml"
        hosts.write_text(hosts.read_text().replace("h1.lab.test", "h1.example.test"))
    before = compute(coop, use_cache=False)
    warm = compute(coop)
    _same(warm, before)
    _same(compute(coop), before)  # and again, from what that run saved


def test_a_racy_change_of_same_size_and_mtime_is_seen(coop: Path) -> None:
    path = coop / "members" / "ada-books.yml"
    os.utime(path)  # just edited ...
    compute(coop)  # ... and cached right after: within the racy window
    stat = path.stat()
    assert stat.st_mtime_ns >= time.time_ns() - RACY_NS
    path.write_text(path.read_text().replace("quota_mb: 1024", "quota_mb: 2048"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    _same(compute(coop), compute(coop, use_cache=False))


def test_a_touched_but_unchanged_file_keeps_the_placement(
        coop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _age(coop)
    compute(coop)
    os.utime(coop / "members" / "ada-books.yml", ns=(OLD_NS + 10**9, OLD_NS + 10**9))
    import coophost.desired.units as desired

    def fail(*_args: object) -> None:
        raise AssertionError("placement recomputed although no content changed")

    monkeypatch.setattr(desired, "_place_and_hash", fail)
    warm = compute(coop)
    monkeypatch.undo()
    _same(warm, compute(coop, use_cache=False))


def test_unreadable_records_fall_back_to_the_files(coop: Path) -> None:
    _age(coop)
    compute(coop)
    cache = _cache(coop)
    data = marshal.loads(cache.read_bytes())
    data["blob"] = b"\x00garbage"
    data["derived"] = {}
    cache.write_bytes(marshal.dumps(data))
    _same(compute(coop), compute(coop, use_cache=False))


def test_malformed_derived_data_is_ignored(coop: Path) -> None:
    _age(coop)
    compute(coop)
    cache = _cache(coop)
    data = marshal.loads(cache.read_bytes())
    data["derived"] = {name: [key, "nonsense"] for name, (key, _) in data["derived"].items()}
    cache.write_bytes(marshal.dumps(data))
    _same(compute(coop), compute(coop, use_cache=False))


def test_a_duplicate_claim_is_refused_on_every_run(coop: Path) -> None:
    _age(coop)
    compute(coop)
    path = coop / "members" / "bread-coop.yml"
    path.write_text(path.read_text().replace("  - bread-coop.test", "  - ada-books.test", 1))
    for _ in range(2):
        with pytest.raises(ValidationError, match="already belongs"):
            compute(coop)


def test_derived_data_is_dropped_when_an_entry_changes(tmp_path: Path) -> None:
    path = tmp_path / "c.marshal"
    cache = ParseCache(path, "fp")
    stat = os.stat(path.parent)
    cache.store("a.yml", stat, b"a", ["a"])
    cache.set_derived("x", "k", [1])
    cache.save()
    again = ParseCache(path, "fp")
    assert again.get_derived("x", "k") == [1]
    assert again.get_derived("x", "other key") is None
    again.store("b.yml", stat, b"b", ["b"])
    assert again.get_derived("x", "k") is None
    assert ParseCache(path, "other fingerprint").get_derived("x", "k") is None


def test_a_role_variable_in_hosts_yml_changes_that_hosts_hash_only(coop: Path) -> None:
    before = compute(coop).host_hashes
    hosts = coop / "hosts.yml"
    text = hosts.read_text()
    hosts.write_text(text.replace("h2: {", "h2: {common_fail2ban_maxretry: 3, ", 1))
    after = compute(coop).host_hashes
    assert after["h2"] != before["h2"]
    assert {h: after[h] == before[h] for h in ("h1", "h3")} == {"h1": True, "h3": True}


def test_connection_settings_in_hosts_yml_are_not_a_change(coop: Path) -> None:
    before = compute(coop).host_hashes
    hosts = coop / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("h2: {", "h2: {ansible_port: 2222, ", 1))
    assert compute(coop).host_hashes == before


def test_a_new_coophost_whose_hashing_code_changed_recomputes_everything(
        coop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import coophost.desired.units as desired

    _age(coop)
    compute(coop)
    calls: list[int] = []
    real = desired._place_and_hash

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(desired, "_place_and_hash", counted)
    compute(coop)
    assert calls == [], "nothing changed, yet the placement was recomputed"
    monkeypatch.setattr(desired, "code_digest", lambda: "another coophost")
    compute(coop)
    assert calls == [1], "the cache of an older coophost was reused"
