"""Search everything the integration tests saw for any secret of the co-op, or a piece of one.

Every coophost run of the suite records its stdout and stderr here (conftest's `coophost`), and
the CLI keeps each ansible-runner folder (COOPHOST_KEEP_RUNNER_DIR) before removing it. At the
end of the session every secret is decrypted from the co-op's own files (every `!vault` block
anywhere in the co-op directory, whatever file holds it) and searched for in all of that: the
whole value, each line of a multi-line value (a private key's base64 lines), and its
JSON-escaped form. A test that prints a secret on purpose (`secrets show`) is not recorded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

VAULT_BLOCK = re.compile(
    r"!vault \|\n([ \t]+\$ANSIBLE_VAULT;[^\n]*\n(?:[ \t]+[0-9a-f]+[ \t]*(?:\n|\Z))*)")
MIN_FRAGMENT = 16  # shorter pieces (PEM armour, short words) would match by chance


@dataclass
class Recorder:
    """What the suite's coophost runs printed, labelled by the command that printed it."""

    outputs: list[tuple[str, str]] = field(default_factory=list)

    def add(self, label: str, *texts: str) -> None:
        """Keep `texts` (stdout, stderr) of one run."""
        self.outputs.extend((label, text) for text in texts if text)


RECORDER = Recorder()


def vault_blocks(text: str) -> Iterator[str]:
    """Every inline `!vault |` ciphertext in a YAML text, dedented."""
    for match in VAULT_BLOCK.finditer(text):
        yield "\n".join(line.strip() for line in match.group(1).splitlines()) + "\n"


def decrypt_all(root: Path, password: bytes) -> list[str]:
    """Every secret value stored vault-encrypted anywhere under the co-op directory `root`."""
    from ansible.parsing.vault import VaultLib, VaultSecret

    vault = VaultLib([("default", VaultSecret(password))])
    values = []
    for path in sorted(root.rglob("*.yml")):
        if ".coophost" in path.parts or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for block in vault_blocks(text):
            values.append(vault.decrypt(block.encode()).decode())
    return values


def fragments(value: str) -> set[str]:
    """The pieces of a secret whose presence anywhere means it leaked.

    An OpenSSH private key's first base64 line is the same in every key of its type (format
    name, cipher "none", key type): it is no piece of this secret and is left out.
    """
    pieces = {value, json.dumps(value)[1:-1]}
    common = _openssh_constant_lines() if value.startswith(OPENSSH_ARMOUR) else set()
    for line in value.splitlines():
        line = line.strip()
        if not line.startswith("-----") and line not in common:
            pieces.add(line)
    return {piece for piece in pieces if len(piece) >= MIN_FRAGMENT}


OPENSSH_ARMOUR = "-----BEGIN OPENSSH PRIVATE KEY-----"


def _openssh_constant_lines() -> set[str]:
    """Lines shared by two fresh unencrypted ed25519 keys in OpenSSH's format."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    def lines() -> set[str]:
        text = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption()).decode()
        return set(text.splitlines())

    return lines() & lines()


def files_under(*roots: Path, skip: Iterable[Path] = ()) -> Iterator[tuple[str, str]]:
    """(path, contents as latin-1) of every regular file under `roots`, except `skip`."""
    skipped = {p.resolve() for p in skip}
    for root in roots:
        if not root.exists():
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink() and path.resolve() not in skipped:
                yield str(path), path.read_bytes().decode("latin-1")


def leaks(secrets: Iterable[str], places: Iterable[tuple[str, str]]) -> list[str]:
    """'piece of secret #N in PLACE' for every fragment found; empty when nothing leaked."""
    pieces = [(n, piece) for n, value in enumerate(secrets) for piece in fragments(value)]
    found = []
    for place, text in places:
        for n, piece in pieces:
            if piece in text:
                found.append(f"a piece of secret #{n} ({len(piece)} characters) in {place}")
    return found


def shows_new_password(words: list[str]) -> bool:
    """Whether a coophost command line prints a new password on stdout, on purpose."""
    if any(words[i:i + 2] == ["secrets", "rotate"] for i in range(len(words))):
        return True
    if "--remote" in words:  # the member shell: its verb follows the client's own options
        verb = next((w for i, w in enumerate(words) if not w.startswith("-") and (
            i == 0 or words[i - 1] not in ("--remote", "--identity", "--known-hosts"))), "")
        return verb == "password"
    return False
