"""`coophost --remote USER@HOST[:PORT] VERB...`: a member's client for the member shell.

The words after the root options are sent as one SSH command (shell-quoted; the server
splits them again and never runs a shell). The control host's key must already be in the
known_hosts file (RejectPolicy: nothing is trusted on first use). `export --out FILE` is
handled here: the archive streams from the channel into FILE, which appears only once the
export finished without error.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import paramiko

from coophost.errors import UsageError

TARGET_RE = re.compile(r"^(?P<user>[a-z_][a-z0-9_.-]{0,31})@(?P<host>\[[0-9a-fA-F:.]+\]|"
                       r"[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?$")
CHUNK = 64 * 1024


def parse_target(text: str) -> tuple[str, str, int]:
    """USER@HOST[:PORT] -> (user, host, port)."""
    found = TARGET_RE.match(text)
    if not found:
        raise UsageError(f"--remote {text!r}: expected USER@HOST or USER@HOST:PORT")
    port = int(found["port"] or 22)
    if not 0 < port < 65536:
        raise UsageError(f"--remote {text!r}: port {port} is out of range")
    return found["user"], found["host"].strip("[]"), port


def split_out(words: list[str]) -> tuple[list[str], Path | None]:
    """Take `--out FILE` off an `export` command (the file is written here, not there)."""
    if not words or words[0] != "export":
        return words, None
    rest, out = [], None
    items = iter(words[1:])
    for word in items:
        if word == "--out":
            value = next(items, None)
            if value is None:
                raise UsageError("export --out: give a file name")
            out = Path(value)
        elif word.startswith("--out="):
            out = Path(word.split("=", 1)[1])
        else:
            rest.append(word)
    return ["export", *rest], out


def run_remote(target: str, words: list[str], *, identity: Path | None = None,
               known_hosts: Path | None = None, timeout: float = 15.0) -> int:
    """Run one member command on the control host; return its exit status."""
    from coophost.fsutil import atomic_stream
    from coophost.registry.hosts import HostEntry
    from coophost.ssh import connect

    user, host, port = parse_target(target)
    words, out = split_out(words)
    pinned = known_hosts or Path.home() / ".ssh" / "known_hosts"
    entry = HostEntry(name=host, address=host, port=port, user=user,
                      key_file=str(identity) if identity else None)
    with connect(entry, pinned, timeout, personal_keys=identity is None,
                 own_known_hosts=True) as client:
        channel = client.get_transport().open_session()  # type: ignore[union-attr]
        channel.exec_command(shlex.join(words))
        if out is None:
            return _pump(channel, sys.stdout.buffer)
        try:
            with atomic_stream(out) as handle:
                status = _pump(channel, handle)
                if status != 0:
                    raise _Failed(status)
        except _Failed as failed:
            return failed.status
        return status


class _Failed(Exception):
    """The remote command failed: the partial output file is dropped."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _pump(chan: paramiko.Channel, out: IO[bytes]) -> int:
    """Copy the channel's stdout to `out` and its stderr to ours, until its end."""
    import select

    while True:
        select.select([chan], [], [], 1.0)
        while chan.recv_stderr_ready():
            sys.stderr.buffer.write(chan.recv_stderr(CHUNK))
            sys.stderr.flush()
        if chan.recv_ready():
            out.write(chan.recv(CHUNK))
        elif chan.eof_received or chan.closed:
            break
    while chan.recv_stderr_ready():
        sys.stderr.buffer.write(chan.recv_stderr(CHUNK))
    out.flush()
    return int(chan.recv_exit_status())
