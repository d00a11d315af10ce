"""Compacted topics on a real supervisor: the cleaner thread, the native clients, kill -9.

A producer writes puts and deletes over a few hundred keys to a topic with
cleanup_policy=compact and small segments; the supervisor's cleaner (paced slowly, so that it is
mid-cleaning when killed) is SIGKILLed at random moments, and restarted. Afterwards a native
Consumer reading from the beginning sees, folded by key, exactly the latest value of every live
key, at increasing offsets; the log has shrunk; no half-written cleaned file is left.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.testing import EmbeddedBroker
from tests.log.logtest_helpers import fold

pytestmark = pytest.mark.integration

TOPIC = "kettles"


def broker(tmp_path: Path, io: int) -> EmbeddedBroker:
    return EmbeddedBroker(tmp_path / "b", config={
        "log": {"cleaner_interval_ms": 100, "cleaner_io_bytes_per_s": io,
                "flush_interval_ms": 100, "checkpoint_interval_ms": 200},
    }).start()


def read_all(sock: str) -> list[tuple[int, bytes, bytes | None]]:
    out: list[tuple[int, bytes, bytes | None]] = []
    tp = TopicPartition(TOPIC, 0)
    with Consumer(socket=sock, auto_offset_reset="earliest") as c:
        c.assign([tp])
        end = c.end_offsets([tp])[tp]
        while c.position(tp) < end:
            for recs in c.poll(timeout_ms=2000).values():
                out += [(r.offset, r.key, r.value) for r in recs]
    return out


def status(sock: str) -> dict[str, Any]:
    with Admin(socket=sock) as a:
        return a.status()


def test_compaction_survives_kill9_mid_cleaning(tmp_path: Path) -> None:
    rnd = random.Random(7)
    b = broker(tmp_path, io=256 * 1024)  # slow: a cleaning takes about a second
    model: dict[bytes, bytes] = {}
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic(TOPIC, 1, config={"cleanup.policy": "compact", "segment_bytes": 16384,
                                             "delete_retention_ms": 0})
        kills = 0
        for rnd_i in range(6):
            with Producer(socket=b.socket, acks="durable") as p:
                for i in range(3000):
                    k = b"kettle-%d" % rnd.randrange(300)
                    v = None if rnd.random() < 0.1 else b"%d-%d" % (rnd_i, i)
                    p.send(TOPIC, v, key=k)
                    if v is None:
                        model.pop(k, None)
                    else:
                        model[k] = v
                p.flush()
            # Kill while the cleaner runs (or right after it): never in a clean state on purpose.
            deadline = time.monotonic() + 10
            while not status(b.socket)["cleaner"]["running"] and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rnd.random() * 0.8)
            b.kill9()
            kills += 1
            b.start()
            assert fold(read_all(b.socket)) == model
        assert kills == 6
        # Let this supervisor's first cleaning finish (the counters are its own: earlier ones
        # may have compacted already), then check the result and that it actually compacted.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = status(b.socket)
            if st["cleaner"]["cleanings"] > 0 and not st["cleaner"]["running"]:
                break
            time.sleep(0.1)
        st = status(b.socket)
        assert st["cleaner"]["cleanings"] > 0, st["cleaner"]
        assert st["cleaner"]["errors"] == 0, st["cleaner"]
        got = read_all(b.socket)
        offsets = [o for o, _k, _v in got]
        assert offsets == sorted(set(offsets))
        assert fold(got) == model
        assert len(got) < 18_000 / 2, "the cleaner removed little: was anything compacted?"
        assert not list((tmp_path / "b").rglob("*.tmp")), "a half-written cleaned file was left"
    finally:
        b.stop()


def test_cleanup_policy_is_set_and_changed_by_the_native_admin(tmp_path: Path) -> None:
    b = broker(tmp_path, io=64 * 1024 * 1024)
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic(TOPIC, 1, config={"segment_bytes": 4096})
            with Producer(socket=b.socket, acks="durable") as p:
                for i in range(2000):
                    p.send(TOPIC, b"%d" % i, key=b"k%d" % (i % 10))
                    if i % 50 == 49:
                        p.flush()  # small batches: segments roll, the active one stays small
            time.sleep(0.5)
            assert status(b.socket)["cleaner"]["segments_rewritten"] == 0  # policy "delete"
            a.alter_topic_config(TOPIC, {"cleanup.policy": "compact"})
            deadline = time.monotonic() + 30
            while status(b.socket)["cleaner"]["segments_rewritten"] == 0:
                assert time.monotonic() < deadline, "the cleaner never ran after the alter"
                time.sleep(0.1)
        # Every sealed segment is cleaned once it is fsynced (the cleaner plans again until
        # then): what is left is one record per key in them, plus the active segment.
        while len(got := read_all(b.socket)) >= 400:
            assert time.monotonic() < deadline, f"still {len(got)} records"
            time.sleep(0.2)
        assert fold(got) == {b"k%d" % k: b"%d" % (1990 + k) for k in range(10)}
    finally:
        b.stop()
