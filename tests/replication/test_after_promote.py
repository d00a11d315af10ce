"""The old source comes back after a failover (docs/REPLICATION.md, "Failover"): the peer's
promoted topic is its own now, and the returning node's replicator must hold that topic only,
saying why, while its other topics keep shipping. (Found by following the docs as a user: the
link used to go down as a whole with "TopicExistsError: topic 'cmd' already exists".)

Real processes: two supervisors and `edgebus replicate` twice (before and after the failover)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edgebus import Admin, BatchReader, Consumer, Producer, TopicPartition
from edgebus.testing import EmbeddedBroker

from .conftest import NODE, PeerDestination, Replicators, wait_for

pytestmark = pytest.mark.integration


def _produce(sock: str, topic: str, values: list[bytes]) -> None:
    with Producer(socket=sock, acks="written") as p:
        for v in values:
            p.send(topic, v, partition=0)
        p.flush()


def _end(sock: str, topic: str) -> int:
    with BatchReader(sock) as r:
        return r.describe(topic).end_offsets[0]


def _values(sock: str, topic: str) -> list[bytes]:
    with Consumer(socket=sock, auto_offset_reset="earliest", consumer_timeout_ms=1000) as c:
        c.assign([TopicPartition(topic, 0)])
        return [r.value for r in c]


def _promote(a: Admin, topic: str) -> bool:
    a.promote_topic(topic)
    return True


def test_a_returning_source_holds_the_promoted_topic_and_ships_the_rest(
        make_broker: Callable[..., EmbeddedBroker], tmp_path: Path,
        replicators: Replicators) -> None:
    source = make_broker(name="src").start()
    peer = PeerDestination(make_broker, tmp_path)
    dst = peer.broker.socket
    with Admin(socket=source.socket) as a:
        a.create_topic("cmd", 1)
        a.create_topic("logs", 1)
    _produce(source.socket, "cmd", [b"c%d" % i for i in range(5)])
    _produce(source.socket, "logs", [b"l%d" % i for i in range(5)])
    cfg = {"node": NODE, "source": {"socket": source.socket},
           "links": [{"name": "backup", "topics": ["cmd", "logs"],
                      **peer.link_config(tmp_path)}]}
    first = replicators.make(cfg).start()
    wait_for(lambda: _end(dst, "cmd") == 5 and _end(dst, "logs") == 5, what="the mirrors")

    # Failover: the source's replicator is gone, the peer promotes cmd and writes to it.
    assert first.stop() == 0
    with Admin(socket=dst) as a:
        wait_for(lambda: _promote(a, "cmd"), what="promote")
    _produce(dst, "cmd", [b"after failover"])

    # The old source is back, with more records, and its replicator starts again.
    _produce(source.socket, "cmd", [b"late %d" % i for i in range(3)])
    _produce(source.socket, "logs", [b"l%d" % i for i in range(5, 10)])
    second = replicators.make(cfg).start()
    wait_for(lambda: _end(dst, "logs") == 10, timeout=30,
             what=f"logs to ship past the promoted cmd:\n{second.log()[-2000:]}")
    wait_for(lambda: "promoted with `edgebus topics promote`" in second.log(),
             what="the held topic's reason in the log")
    log = second.log()
    assert "'cmd' there is not a mirror of gw-src/cmd" in log, log
    assert "TopicExistsError" not in log, log
    # `edgebus status` beside the source says so too (from the status file the replicator
    # rewrites every second): the row HELD, the reason below the table.
    def status() -> str:
        return subprocess.run([sys.executable, "-m", "edgebus.cli.main", "status", "--socket",
                               source.socket], capture_output=True, text=True, timeout=60).stdout

    def held_row() -> bool:
        return any("backup -> peer" in ln and " cmd-0 " in ln and " HELD " in ln
                   for ln in status().splitlines())

    wait_for(held_row, what="the HELD row in `edgebus status`")
    text = status()
    assert re.search(r"^HELD by .* backup: cmd-0: .*promoted with `edgebus topics promote`",
                     text, re.M), text
    # The promoted topic is the peer's own: nothing of the returning source is mixed into it.
    assert _values(dst, "cmd") == [b"c0", b"c1", b"c2", b"c3", b"c4", b"after failover"]
    assert _values(dst, "logs") == [b"l%d" % i for i in range(10)]
