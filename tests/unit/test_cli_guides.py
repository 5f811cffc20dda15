"""A CLI that guides: did-you-mean for commands and members, the co-op directory found from
the current folder upwards, `member show` as YAML that reads back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from coophost.cli.options import DEFAULT_INVENTORY, INVENTORY_ENV, discover


def test_an_unknown_command_names_the_closest_one_even_before_its_module_is_loaded(cli) -> None:
    code, _, err = cli("deplyo")
    assert code == 2
    assert "No such command 'deplyo'. Did you mean 'deploy'?" in err
    code, _, err = cli("bakcup")
    assert code == 2 and "Did you mean 'backup'?" in err


def test_an_unknown_command_far_from_any_suggests_nothing(cli) -> None:
    code, _, err = cli("zzzz")
    assert code == 2 and "No such command 'zzzz'." in err and "Did you mean" not in err


@pytest.mark.parametrize("args", [
    ["member", "show", "ada-boks"],
    ["member", "suspend", "ada-boks"],
    ["dns", "records", "--member", "ada-boks"],
    ["secrets", "show", "ada-boks"],
])
def test_an_unknown_member_names_the_closest_one(coop: Path, cli, args: list[str]) -> None:
    before = sorted(p.name for p in (coop / "members").iterdir())
    code, _, err = cli("-i", str(coop), *args)
    assert code == 2, err
    assert "no member 'ada-boks'" in err and "did you mean 'ada-books'?" in err
    assert sorted(p.name for p in (coop / "members").iterdir()) == before


def test_an_unknown_member_far_from_any_points_to_the_list(coop: Path, cli) -> None:
    code, _, err = cli("-i", str(coop), "member", "show", "qqqqqqq")
    assert code == 2 and "no member 'qqqqqqq'" in err
    assert "did you mean" not in err and "`coophost member list` shows them" in err


def test_member_show_prints_yaml_that_reads_back_with_placements(coop: Path, cli) -> None:
    code, out, err = cli("-i", str(coop), "member", "show", "cycle-works")
    assert code == 0, err
    shown = YAML(typ="safe").load(out)
    assert shown["slug"] == "cycle-works" and shown["status"] == "active"
    assert shown["domains"] == ["cycle-works.test"]
    assert shown["services"]["mail"]["mailboxes"] == ["hello", "repairs"]
    placed = YAML(typ="safe").load((coop / "members" / "cycle-works.yml").read_text())
    assert shown["services"]["mail"]["host"] == placed["placement"]["mail"]
    assert "['" not in out and "{'" not in out  # no Python reprs


def test_the_coop_directory_is_found_from_the_current_folder_upwards(
        coop: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INVENTORY_ENV, raising=False)
    deep = coop / "members" / "notes"
    deep.mkdir()
    assert discover(coop) == Path(".")
    assert discover(deep) == Path("../..")
    assert discover(coop.parent) is None
    monkeypatch.chdir(deep)
    code, out, err = cli("member", "list")
    assert code == 0, err
    assert "ada-books" in out
    monkeypatch.chdir(coop.parent)  # no coop.yml here or above: the lab's folder, named
    code, _, err = cli("member", "list")
    assert code == 2 and f"{DEFAULT_INVENTORY}: not a co-op directory" in err


def test_a_named_coop_directory_wins_over_the_one_found(coop: Path, tmp_path: Path, cli,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INVENTORY_ENV, raising=False)
    monkeypatch.chdir(coop)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli("-i", str(empty), "member", "list")
    assert code == 2 and "not a co-op directory" in err
    monkeypatch.setenv(INVENTORY_ENV, str(empty))
    assert cli("member", "list")[0] == 2


def test_with_json_an_error_is_one_json_document_on_stdout(coop: Path, cli) -> None:
    code, out, err = cli("-i", str(coop), "member", "show", "ada-boks", "--json")
    assert code == 2 and "no member 'ada-boks'" in err
    error = json.loads(out)["error"]
    assert error == {"kind": "usage", "message": "no member 'ada-boks'", "exit_code": 2,
                     "hint": "did you mean 'ada-books'? (`coophost member list` shows them)"}
    code, out, _ = cli("-i", str(coop), "deplyo", "--json")
    assert code == 2
    assert json.loads(out)["error"]["message"] == "No such command 'deplyo'. Did you mean 'deploy'?"


def test_with_json_a_validation_error_names_file_field_and_value(coop: Path, cli) -> None:
    path = coop / "members" / "ada-books.yml"
    path.write_text(path.read_text().replace("quota_mb: 1024", "quota_mb: lots"))
    code, out, err = cli("-i", str(coop), "plan", "--json")
    assert code == 2, err
    error = json.loads(out)["error"]
    assert error["kind"] == "validation" and error["exit_code"] == 2
    assert error["file"] == "members/ada-books.yml"
    assert error["field"] == "services.mail.quota_mb" and error["value"] == "'lots'"
    assert error["message"].startswith("members/ada-books.yml: services.mail.quota_mb: 'lots'")


def test_without_json_an_error_prints_nothing_on_stdout(coop: Path, cli) -> None:
    code, out, err = cli("-i", str(coop), "member", "show", "ada-boks")
    assert code == 2 and out == "" and "no member" in err
