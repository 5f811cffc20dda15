"""`secrets show` tells a wrong member from a wrong service or key, and lists what it has."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def rendered(coop: Path, cli) -> Path:
    code, _, err = cli("-i", str(coop), "render")
    assert code == 0, err
    return coop


def secret_names(coop: Path, cli) -> dict[str, dict[str, str]]:
    code, out, err = cli("-i", str(coop), "secrets", "show", "ada-books", "--json")
    assert code == 0, err
    return json.loads(out)


def test_a_member_that_does_not_exist(rendered: Path, cli) -> None:
    code, _, err = cli("-i", str(rendered), "secrets", "show", "ada-book")
    assert code == 2
    assert "no member 'ada-book'" in err
    assert "did you mean 'ada-books'?" in err


def test_a_service_without_secrets_lists_the_services_that_have_some(rendered: Path,
                                                                     cli) -> None:
    code, _, err = cli("-i", str(rendered), "secrets", "show", "ada-books", "git")
    assert code == 2
    assert "no secrets stored for ada-books/git" in err
    assert "ada-books has secrets for: mail" in err


def test_a_wrong_key_lists_the_keys_not_their_values(rendered: Path, cli) -> None:
    stored = secret_names(rendered, cli)["mail"]
    code, _, err = cli("-i", str(rendered), "secrets", "show", "ada-books", "mail", "nope")
    assert code == 2
    assert "ada-books/mail has no secret 'nope'" in err
    assert "its secrets: " + ", ".join(sorted(stored)) in err
    for value in stored.values():
        for line in value.splitlines():
            if len(line) > 8:
                assert line not in err
