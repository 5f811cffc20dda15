"""A member's secrets belong to one life at the co-op: a later member with the same slug
never gets them, and a member from before lives existed keeps its own."""

from __future__ import annotations

import json
from pathlib import Path

from coophost.registry.loader import load_registry


def _life(coop: Path, slug: str) -> str:
    return load_registry(coop, need_hosts=False).registry.members[slug].life


def _secrets(cli, coop: Path, slug: str) -> dict[str, dict[str, str]]:
    code, out, err = cli("-i", str(coop), "secrets", "show", slug, "--json")
    assert code == 0, err
    data: dict[str, dict[str, str]] = json.loads(out)
    return data


def _readd(cli, coop: Path, slug: str, domain: str) -> None:
    code, _, err = cli("-i", str(coop), "member", "add", slug, "--name", "Next Owner",
                       "--contact", f"next@{domain}", "--domain", domain)
    assert code == 0, err
    code, _, err = cli("-i", str(coop), "service", "enable", slug, "mail",
                       "--set", "mailboxes=[ada, orders]")
    assert code == 0, err


def test_a_new_member_reusing_a_slug_gets_none_of_the_old_members_secrets(coop: Path,
                                                                         cli) -> None:
    code, _, err = cli("-i", str(coop), "render")
    assert code == 0, err
    old_life = _life(coop, "ada-books")
    old = _secrets(cli, coop, "ada-books")["mail"]
    assert old["mailbox_passwords/ada"] and old["dkim_key"]
    code, _, err = cli("-i", str(coop), "member", "remove", "ada-books", "--yes")
    assert code == 0, err
    kept = sorted((coop / "secrets" / "removed").glob(f"ada-books.{old_life}.*.yml"))
    assert len(kept) == 1, "the removed member's secrets are not kept aside for the archive"
    audit = [json.loads(line) for line in (coop / "audit.log").read_text().splitlines()]
    assert audit[-1]["action"] == "member removed" and audit[-1]["member"] == "ada-books"

    _readd(cli, coop, "ada-books", "ada-books.test")
    new_life = _life(coop, "ada-books")
    assert new_life and new_life != old_life
    code, _, err = cli("-i", str(coop), "render")
    assert code == 0, err
    new = _secrets(cli, coop, "ada-books")["mail"]
    assert new["mailbox_passwords/ada"] != old["mailbox_passwords/ada"]
    assert new["dkim_key"] != old["dkim_key"]
    assert not set(new.values()) & set(old.values()), "a secret passed to the next owner"
    # The rendered host vars carry the new life's mail home, not the old one's.
    rendered = "".join(p.read_text() for p in (coop / "host_vars").glob("*.yml"))
    assert f"ada-books.{new_life}" in rendered and f"ada-books.{old_life}" not in rendered


def test_a_member_from_before_lives_gets_one_and_keeps_its_secrets(coop: Path, cli) -> None:
    code, _, err = cli("-i", str(coop), "render")
    assert code == 0, err
    life = _life(coop, "dune-press")
    before = _secrets(cli, coop, "dune-press")
    # As a co-op from before lives: no id in the file, secrets/<slug>.yml.
    member = coop / "members" / "dune-press.yml"
    member.write_text("".join(line for line in member.read_text().splitlines(keepends=True)
                              if not line.startswith("id:")))
    (coop / "secrets" / f"dune-press.{life}.yml").rename(coop / "secrets" / "dune-press.yml")
    code, _, err = cli("-i", str(coop), "render")
    assert code == 0, err
    given = _life(coop, "dune-press")
    assert given and given != life
    assert not (coop / "secrets" / "dune-press.yml").exists()
    assert (coop / "secrets" / f"dune-press.{given}.yml").is_file()
    assert _secrets(cli, coop, "dune-press") == before


def test_a_malformed_life_id_is_refused(coop: Path, cli) -> None:
    member = coop / "members" / "dune-press.yml"
    text = member.read_text()
    life = _life(coop, "dune-press")
    member.write_text(text.replace(f"id: {life}", "id: ../../etc"))
    code, _, err = cli("-i", str(coop), "plan")
    assert code == 2
    assert "dune-press.yml" in err and "id" in err and "../../etc" in err, err


def test_an_id_that_looks_like_a_number_stays_text(coop: Path, cli, monkeypatch) -> None:
    """Ids are random hex: `123e4567...` or all digits must be written so YAML reads text."""
    from coophost.registry import edit

    for life in ("123e45678901", "000000000000", "1e9999999999"):
        monkeypatch.setattr(edit, "new_life", lambda life=life: life)
        slug = f"num-{life[:4]}"
        code, _, err = cli("-i", str(coop), "member", "add", slug, "--name", "N",
                           "--contact", f"n@{slug}.test")
        assert code == 0, err
        assert _life(coop, slug) == life
    # and a member from before lives given such an id by a render
    member = coop / "members" / "dune-press.yml"
    member.write_text("".join(line for line in member.read_text().splitlines(keepends=True)
                              if not line.startswith("id:")))
    monkeypatch.setattr(edit, "new_life", lambda: "4e1234567890")
    code, _, err = cli("-i", str(coop), "render")
    assert code == 0, err
    assert _life(coop, "dune-press") == "4e1234567890"
