"""Real supervisor, real producer and consumer processes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.client.types import partition_for_key

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def worker(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.integration.workers", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_ok(p: subprocess.Popen[bytes], timeout: float = 180) -> bytes:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err.decode()
    return out


def test_two_producers_two_consumers_100k_exactly_once(broker, tmp_path):
    topic, per_producer, keys = "events", 50_000, 97
    with Admin(socket=broker.socket) as admin:
        admin.create_topic(topic, partitions=4)
    # Consumers start first and read while the producers write.
    total = 2 * per_producer
    outs = [tmp_path / "c0.json", tmp_path / "c1.json"]
    # Each consumer owns two partitions; it learns how many records to expect from the keys:
    # the key -> partition mapping is fixed, so the per-partition counts are known in advance.
    per_part = defaultdict(int)
    for i in range(per_producer):
        per_part[partition_for_key(f"k{i % keys}".encode(), 4)] += 2
    consumers = [
        worker("consume", broker.socket, topic, "0,1", str(outs[0]), str(per_part[0] + per_part[1])),
        worker("consume", broker.socket, topic, "2,3", str(outs[1]), str(per_part[2] + per_part[3])),
    ]
    producers = [worker("produce", broker.socket, topic, f"p{i}", str(per_producer), str(keys))
                 for i in range(2)]
    for p in producers:
        assert json.loads(wait_ok(p))["sent"] == per_producer
    for c in consumers:
        wait_ok(c)
    rows = json.loads(outs[0].read_text()) + json.loads(outs[1].read_text())
    assert len(rows) == total
    values = [r[3] for r in rows]
    assert len(set(values)) == total, "a record was read twice"
    assert set(values) == {f"p{i}:{n}" for i in range(2) for n in range(per_producer)}
    by_part: dict[int, list] = defaultdict(list)
    key_part: dict[str, int] = {}
    for part, offset, key, value in rows:
        by_part[part].append((offset, value))
        assert key_part.setdefault(key, part) == part, f"key {key} in two partitions"
        assert part == partition_for_key(key.encode(), 4)
    for part, items in by_part.items():
        offsets = [o for o, _ in items]
        assert offsets == list(range(len(offsets))), f"partition {part} offsets not dense/ordered"
        # Per producer, its records appear in the order it sent them.
        last = {"p0": -1, "p1": -1}
        for _, v in items:
            prod, seq = v.split(":")
            assert int(seq) > last[prod]
            last[prod] = int(seq)


def test_replay_from_offset_and_timestamp(broker):
    with Admin(socket=broker.socket) as admin:
        admin.create_topic("replay", partitions=1)
    with Producer(socket=broker.socket, acks="durable") as p:
        first = [p.send("replay", f"a{i}".encode()) for i in range(10)]
        p.flush()
        import time

        time.sleep(0.05)
        mark = int(time.time() * 1000)
        time.sleep(0.05)
        second = [p.send("replay", f"b{i}".encode()) for i in range(10)]
        p.flush()
    assert [f.get(5).offset for f in first] == list(range(10))
    assert [f.get(5).offset for f in second] == list(range(10, 20))
    tp = TopicPartition("replay", 0)
    with Consumer(socket=broker.socket) as c:
        c.assign([tp])
        c.seek(tp, 7)
        # poll() returns as soon as records are there: its bound is for a loaded machine
        # (2 s of an empty poll was a KeyError below, not an answer about the replay).
        got = [r.value for r in c.poll(30_000)[tp]]
        assert got[:3] == [b"a7", b"a8", b"a9"]
        c.seek_to_timestamp(mark)
        assert c.position(tp) == 10
        assert c.poll(30_000)[tp][0].value == b"b0"
        c.seek_to_beginning()
        assert c.position(tp) == 0


def test_long_poll_wakes_on_append(broker):
    import threading
    import time

    with Admin(socket=broker.socket) as admin:
        admin.create_topic("lp")
    # The fetch's own wait (30 s, the supervisor's cap) outlasts the poll (20 s): only the append
    # waking it brings the record within the poll.
    c = Consumer("lp", socket=broker.socket, auto_offset_reset="latest", fetch_max_wait_ms=30_000)
    assert c.poll(100) == {}

    def later() -> None:
        time.sleep(0.3)
        with Producer(socket=broker.socket) as p:
            p.send("lp", b"hello").get(5)

    t = threading.Thread(target=later)
    t.start()
    recs = c.poll(20_000)
    t.join()
    c.close()
    assert [r.value for rs in recs.values() for r in rs] == [b"hello"], \
        "the fetch was not woken by the append"


def test_headers_null_keys_and_values_round_trip(broker):
    with Admin(socket=broker.socket) as admin:
        admin.create_topic("rt", partitions=3)
    with Producer(socket=broker.socket) as p:
        p.send("rt", None, key=b"k", headers=[("a", b"1"), ("b", None)]).get(5)
        p.send("rt", b"", key=None, partition=2).get(5)
    c = Consumer("rt", socket=broker.socket, auto_offset_reset="earliest")
    recs = [r for rs in c.poll(2000).values() for r in rs]
    while len(recs) < 2:
        recs += [r for rs in c.poll(2000).values() for r in rs]
    c.close()
    by_key = {r.key: r for r in recs}
    assert by_key[b"k"].value is None and by_key[b"k"].headers == [("a", b"1"), ("b", None)]
    assert by_key[None].value == b"" and by_key[None].partition == 2
