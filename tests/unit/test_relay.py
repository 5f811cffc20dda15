"""The remote executor: what a worker streams back reaches `ansible-runner process`
whole, a cancel or a silent transport ends it as lost (never as a normal end), and each
job carries the collections its plays use."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from coophost.deploy.remote import RemoteExecutor, StreamEnd


def _relay(chunks: list[bytes | type[TimeoutError]], read_timeout: float = 0.2,
           cancel_after: int | None = None) -> tuple[bool, StreamEnd, bytes, int]:
    executor = RemoteExecutor(Path("."), {}, read_timeout=read_timeout)
    cancel = threading.Event()
    turns = []
    feed = iter(chunks)

    def recv(size: int) -> bytes:
        item = next(feed, TimeoutError)
        if item is TimeoutError:
            raise TimeoutError
        assert isinstance(item, bytes) and size > 0
        return item

    def each_turn() -> None:
        turns.append(1)
        if cancel_after is not None and len(turns) > cancel_after:
            cancel.set()

    read_end, write_end = os.pipe()
    end = StreamEnd()
    ended = executor._relay(recv, write_end, cancel, end, each_turn=each_turn)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as incoming:
        return ended, end, incoming.read(), len(turns)


def test_everything_before_the_end_is_relayed_and_the_end_is_normal() -> None:
    ended, end, data, turns = _relay([b"one ", TimeoutError, b"two", b""])
    assert (ended, end.lost, data) == (True, "", b"one two")
    assert turns == 4  # each_turn before every read


def test_a_silent_transport_is_lost_after_the_read_timeout() -> None:
    ended, end, data, _ = _relay([b"partial"], read_timeout=0.05)
    assert ended is False and data == b"partial"
    assert end.lost.startswith("no data from the worker for")


def test_a_cancel_ends_it_as_lost() -> None:
    ended, end, data, _ = _relay([b"a", b"b", b"c", b""], cancel_after=2)
    assert (ended, end.lost, data) == (False, "canceled", b"ab")


def test_each_job_carries_every_collection_the_plays_use() -> None:
    """A role using a collection the job does not carry fails on every worker (nextcloud's
    community.postgresql did): every FQCN namespace.collection in playbooks/, roles/ and
    services/ (molecule scenarios aside) is ansible.builtin or in JOB_COLLECTIONS."""
    import re

    from coophost.deploy.remote import JOB_COLLECTIONS, collection_paths
    from coophost.layout import content_root

    fqcn = re.compile(r"^\s*(?:- )?([a-z_]+\.[a-z_]+)\.[a-z_]+:", re.MULTILINE)
    used: set[str] = set()
    root = content_root()
    for top in ("playbooks", "roles", "services"):
        for path in (root / top).rglob("*.yml"):
            if "molecule" not in path.parts:
                used |= set(fqcn.findall(path.read_text()))
    assert "community.postgresql" in used  # the pattern finds them
    assert used - {"ansible.builtin"} <= set(JOB_COLLECTIONS), sorted(used)
    assert set(collection_paths()) == set(JOB_COLLECTIONS)  # each installed here
