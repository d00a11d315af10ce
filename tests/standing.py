"""What the standing-fetch tests on the rings (tests/shm/test_standing_fetch.py) and on the Unix
socket (tests/server/test_socket_standing.py) share: the supervisor's status, a consumer
assigned partition 0, the connection holding the standing fetch, reading offsets until enough."""

from __future__ import annotations

import time
from typing import Any

from edgebus import Admin, Consumer, TopicPartition


def status(broker: Any) -> dict[str, Any]:
    with Admin(socket=broker.socket, transport="socket") as a:
        return a.status()


def consumer(broker: Any, topic: str, transport: str, **kw: Any) -> Consumer:
    c = Consumer(socket=broker.socket, transport=transport, auto_offset_reset="earliest",
                 fetch_max_wait_ms=200, **kw)
    c.assign([TopicPartition(topic, 0)])
    return c


def parked_conn(broker: Any) -> dict[str, Any]:
    """The status entry of the one connection with a parked (standing) fetch."""
    conns = [c for c in status(broker)["clients"] if c["parked_fetches"]]
    assert len(conns) == 1, conns
    return dict(conns[0])


def read_offsets(c: Consumer, tp: TopicPartition, count: int, got: list[int],
                 seconds: float = 30.0) -> list[int]:
    """Poll until `got` holds `count` offsets of `tp` (or `seconds` pass: the caller's assert on
    the offsets then says what is missing); `got`, extended in place."""
    deadline = time.monotonic() + seconds
    while len(got) < count and time.monotonic() < deadline:
        got += [r.offset for r in c.poll(500).get(tp, [])]
    return got
