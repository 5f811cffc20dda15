"""authorized_keys lines binding each member key to the member shell (pure, plus one write).

Each line is `command="<coophost> -i <co-op> member-shell <slug>",restrict <type> <key>`:
sshd runs that command whatever the member asks for (the request arrives only as
$SSH_ORIGINAL_COMMAND), and `restrict` turns off pty allocation, port, agent and X11
forwarding and ~/.ssh/rc. The lines live in one marked block of the file, so the file's
other keys (the sysadmins' own) are kept as they are.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from pathlib import Path

from coophost.errors import UsageError
from coophost.fsutil import atomic_write
from coophost.registry.model import Member

BEGIN = "# BEGIN coophost member keys: written by `coophost members authorize`, edits are lost"
END = "# END coophost member keys"
SHELL_STATUSES = ("active", "suspended", "departed")  # departed members may still export


def _word(text: str, what: str) -> str:
    if not text or any(c in text for c in '"\\\n\r\0') or not text.isprintable():
        raise UsageError(f"{what} {text!r} cannot be used in an authorized_keys command")
    return shlex.quote(text)


def forced_command(coophost: str, root: Path, slug: str) -> str:
    """The command sshd forces for `slug`'s keys (every word shell-quoted)."""
    return " ".join([_word(coophost, "coophost path"), "-i", _word(str(root), "co-op path"),
                     "member-shell", _word(slug, "member")])


def key_lines(members: Iterable[Member], coophost: str, root: Path) -> list[str]:
    """One line per key of every member who may use the shell, in slug order."""
    lines = []
    for member in sorted(members, key=lambda m: m.slug):
        if member.status not in SHELL_STATUSES:
            continue
        command = forced_command(coophost, root, member.slug)
        for key in member.ssh_keys:
            kind, blob = key.split(" ")[:2]  # the member's comment is left out
            lines.append(f'command="{command}",restrict {kind} {blob} '
                         f"coophost-member-{member.slug}")
    return lines


def merge_block(existing: str, lines: list[str]) -> str:
    """`existing` with its coophost block replaced by `lines` (appended when it has none)."""
    kept: list[str] = []
    inside = False
    for line in existing.splitlines():
        if line == BEGIN:
            inside = True
        elif line == END:
            inside = False
        elif not inside:
            kept.append(line)
    if inside:
        raise UsageError(f"the authorized_keys file has `{BEGIN}` without `{END}`: fix it by "
                         "hand first")
    while kept and not kept[-1].strip():
        kept.pop()
    block = [BEGIN, *lines, END]
    return "\n".join([*kept, *([""] if kept else []), *block]) + "\n"


def write_authorized_keys(path: Path, lines: list[str]) -> bool:
    """Write the block into `path` (mode 0600, atomically); return whether it changed."""
    existing = path.read_text() if path.is_file() else ""
    text = merge_block(existing, lines)
    if text == existing:
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, text, mode=0o600)
    return True
