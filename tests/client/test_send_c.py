"""The one-call sends of a one-step send() (issue 16): eb_ring_produce (edgebus/shm/produce.c)
writes into a real ring, and eb_sock_produce (edgebus/sock_send.c) sends on a real socket pair,
exactly the bytes of the general path's Python encoding (edgebus.batch, the PRODUCE codec), for
keys, None values, timestamps and sizes at the limits, across the ring's wrap-around; the hold
and "no room" answers write nothing. And end to end: records sent in one step and records sent
by the general path (headers, or lingering) are stored as the same batch bytes.
"""

from __future__ import annotations

import os
import socket

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus import batch as B
from edgebus.client import c_send
from edgebus.client.record_frames import (
    FAST_MAX_RECORD,
    FRAME_BUFFER_BYTES,
    FRAME_FIXED,
    NULL,
    PRODUCE,
    SEND_DECLINED,
    frame_bytes,
    new_frame_buffer,
    produce_frame,
    sock_produce,
)
from edgebus.fastpath.produce import _prefix, produce_body_parts

needs_c = pytest.mark.skipif(produce_frame is None, reason="edgebus's C module (with zlib) is not built")

KEYS = [None, b"", b"k", bytes(range(256)) * 3]
VALUES = [None, b"", b"v", b"x" * 100, bytes(range(256)) * 40]
TIMESTAMPS = [0, 1, 1_733_500_000_123, 2**63 - 1, -1]
TOPICS = [("t", 0, 1), ("a-longer.topic_name", 7, 2), ("x" * 200, 2**31 - 1, 1)]


def python_frame(topic: str, partition: int, acks: int, key: bytes | None, value: bytes | None,
                 ts: int, corr: int) -> bytes:
    """The general path's request frame of a batch of this one record (Python encoding)."""
    rec = B.encode_record(ts, key, value, ())
    parts, size = B.batch_parts([rec], ts, ts, record_count=1)
    return produce_body_parts(topic, partition, acks, parts, size).frame(corr)


def cases() -> list[tuple[str, int, int, bytes | None, bytes | None, int]]:
    out = []
    for i, (topic, partition, acks) in enumerate(TOPICS):
        for key in KEYS:
            for j, value in enumerate(VALUES):
                out.append((topic, partition, acks, key, value, TIMESTAMPS[(i + j) % len(TIMESTAMPS)]))
    # the largest record a one-step send takes (FAST_MAX_RECORD encoded bytes), with and without a key
    out.append(("t", 0, 1, None, b"m" * (FAST_MAX_RECORD - 22), 5))
    out.append(("t", 0, 1, b"kk", b"m" * (FAST_MAX_RECORD - 24), 6))
    return out


def _args(key: bytes | None, value: bytes | None) -> tuple:
    return (NULL if key is None else key, -1 if key is None else len(key),
            NULL if value is None else value, -1 if value is None else len(value))


class _Ring:
    """A real request ring in a memfd, written by eb_ring_produce, read by the reader's code."""

    def __init__(self, capacity: int) -> None:
        from edgebus.shm import ring as R

        self.R = R
        fd = os.memfd_create("eb-test-ring")
        size = R.ring_bytes(capacity)
        os.ftruncate(fd, size)
        self.mapping = R.Mapping(fd, size)
        os.close(fd)
        R.init_ring(self.mapping, 0, capacity)
        self.ring = R.Ring(self.mapping, 0, capacity)
        self.sender = R.ffi.new("eb_sender *")

    def produce(self, prefix: bytes, key: bytes | None, value: bytes | None, ts: int, corr: int,
                hold: bool = False) -> int:
        return self.R.lib.eb_ring_produce(self.ring.d, self.sender, prefix, len(prefix),
                                          *_args(key, value), ts, corr, PRODUCE, -1, hold)

    def close(self) -> None:
        self.mapping.close()


@pytest.fixture
def ring():
    pytest.importorskip("edgebus.shm._ring")
    r = _Ring(64 * 1024)
    yield r
    r.close()


@needs_c
def test_the_ring_gets_the_python_paths_bytes_through_wrap_around(ring) -> None:
    """Every case written and read back, three times over (the ring wraps: padding markers)."""
    written = 0
    for rnd in range(3):
        for corr, (topic, partition, acks, key, value, ts) in enumerate(cases(), 1 + rnd * 1000):
            want = python_frame(topic, partition, acks, key, value, ts, corr)
            at = ring.ring.head
            assert ring.produce(_prefix(topic, partition, acks), key, value, ts, corr) == 1
            assert ring.sender.last_at == at  # where our last request began (unread())
            assert bytes(ring.ring.read()) == want
            written += len(want)
    assert written > 3 * ring.ring.capacity  # it did wrap, more than once


@needs_c
def test_the_ring_write_is_eb_produce_frames_bytes(ring) -> None:
    """The C frame builder's two users agree (records.c's into a buffer, produce.c's in place)."""
    buf = new_frame_buffer()
    for corr, (topic, partition, acks, key, value, ts) in enumerate(cases(), 0xFFFFFFF0):
        corr &= 0xFFFFFFFF
        pre = _prefix(topic, partition, acks)
        n = produce_frame(buf, FRAME_BUFFER_BYTES, pre, len(pre), *_args(key, value), ts, corr,
                          PRODUCE)
        assert ring.produce(pre, key, value, ts, corr) == 1
        assert bytes(ring.ring.read()) == frame_bytes(buf, n)
        assert n == FRAME_FIXED + len(pre) + len(key or b"") + len(value or b"")


@needs_c
def test_a_held_or_unfitting_record_writes_nothing(ring) -> None:
    pre = _prefix("t", 0, 1)
    assert ring.produce(pre, None, b"a", 1, 1) == 1
    assert ring.produce(pre, None, b"b", 1, 2) == 1
    head = ring.ring.head
    # The supervisor has not read up to where our last request began: a held send declines.
    assert ring.produce(pre, None, b"c", 1, 3, hold=True) == 2
    assert ring.ring.head == head
    ring.ring.read(max_frames=1)  # it took the first request: now only our last is unread
    assert ring.produce(pre, None, b"c", 1, 3, hold=True) == 1
    got = bytes(ring.ring.read())
    assert got == python_frame("t", 0, 1, None, b"b", 1, 2) + python_frame("t", 0, 1, None, b"c", 1, 3)
    # No room: nothing written, the head unmoved.
    big = b"z" * (FAST_MAX_RECORD - 22)
    n = 0
    while ring.produce(pre, None, big, 1, 10 + n) == 1:
        n += 1
    head = ring.ring.head
    assert ring.produce(pre, None, big, 1, 99) == 0
    assert ring.ring.head == head
    frames = bytes(ring.ring.read(max_frames=1000, max_bytes=1 << 30))
    assert frames == b"".join(python_frame("t", 0, 1, None, big, 1, 10 + i) for i in range(n))
    # A frame larger than the ring's max frame is refused (the caller's waiting write sends it).
    small = _Ring(4096)
    try:
        assert small.produce(pre, None, b"q" * 3000, 1, 1) == -1
        assert small.ring.head == 0
    finally:
        small.close()


@needs_c
def test_the_socket_gets_the_python_paths_bytes() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    buf = new_frame_buffer()
    try:
        for corr, (topic, partition, acks, key, value, ts) in enumerate(cases(), 1):
            want = python_frame(topic, partition, acks, key, value, ts, corr)
            pre = _prefix(topic, partition, acks)
            assert sock_produce(a.fileno(), buf, FRAME_BUFFER_BYTES, pre, len(pre),
                                *_args(key, value), ts, corr, PRODUCE, 0) == len(want)
            got = b""
            while len(got) < len(want):
                got += b.recv(len(want) - len(got))
            assert got == want
        # Unread bytes and check_unread: declined, nothing sent; read them and it goes.
        pre = _prefix("t", 0, 1)
        assert sock_produce(a.fileno(), buf, FRAME_BUFFER_BYTES, pre, len(pre), NULL, -1,
                            b"1", 1, 1, 1, PRODUCE, 1) > 0
        assert sock_produce(a.fileno(), buf, FRAME_BUFFER_BYTES, pre, len(pre), NULL, -1,
                            b"2", 1, 1, 2, PRODUCE, 1) == SEND_DECLINED
        first = python_frame("t", 0, 1, None, b"1", 1, 1)
        assert b.recv(65536) == first  # only the first was sent
        assert sock_produce(a.fileno(), buf, FRAME_BUFFER_BYTES, pre, len(pre), NULL, -1,
                            b"2", 1, 1, 2, PRODUCE, 1) == len(first)
        # A full socket buffer takes part or none: the count says how much (EAGAIN: 0).
        a.setblocking(False)
        filled = 0
        big = b"f" * (FAST_MAX_RECORD - 22)
        while (r := sock_produce(a.fileno(), buf, FRAME_BUFFER_BYTES, pre, len(pre), NULL, -1,
                                 big, len(big), 1, 3, PRODUCE, 0)) == FRAME_FIXED + len(pre) + len(big):
            filled += 1
        assert 0 <= r < FRAME_FIXED + len(pre) + len(big) and filled > 0
        # A closed peer: an errno, never a count.
        b.close()
        r = sock_produce(a.fileno(), buf, FRAME_BUFFER_BYTES, pre, len(pre), NULL, -1, b"x", 1, 1,
                         4, PRODUCE, 0)
        assert r <= -1000 and -r - 1000 in (32, 104)  # EPIPE / ECONNRESET
    finally:
        a.close()
        b.close()


def _stored_batches(broker, topic: str) -> list[bytes]:
    """The batches of partition 0 as the log file holds them, without the supervisor's stamps
    (base offset, append time: outside the CRC, docs/FORMAT.md)."""
    d = broker.data_dir / f"{topic}-0"
    data = b"".join(f.read_bytes() for f in sorted(d.glob("*.log")))
    out, pos = [], 0
    while pos + 64 <= len(data):
        length = int.from_bytes(data[pos + 16 : pos + 20], "little")
        out.append(data[pos + 16 : pos + length])
        pos += length
    return out


@needs_c
@pytest.mark.integration
@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_one_step_and_general_sends_store_the_same_bytes(broker, transport, monkeypatch) -> None:
    """The same records through a one-step producer (linger_ms=0, no headers) whose send() is
    the C Sender (edgebus/onestep.c), through one whose one-step send is Python's (the C
    Sender not installed: fast_send._send_one), and through the general path (linger_ms=5,
    each flushed alone): the log files hold the same batch bytes; a record with headers
    (general path at linger_ms=0 too) reads back whole."""
    recs = [(k, v, ts) for k in (None, b"", b"key") for v, ts in
            ((None, 1), (b"", 2), (b"v" * 100, 1_733_500_000_123), (b"m" * (FAST_MAX_RECORD - 30), 7))]
    stored = {}
    for name, linger in (("one", 0), ("python", 0), ("general", 5)):
        topic = f"bytes-{transport}-{name}"
        with Admin(socket=broker.socket, transport="socket") as a:
            a.create_topic(topic, 1)
        monkeypatch.setattr(c_send, "AVAILABLE", c_send.AVAILABLE and name == "one")
        with Producer(socket=broker.socket, transport=transport, linger_ms=linger) as p:
            for k, v, ts in recs:
                p.send(topic, v, key=k, partition=0, timestamp_ms=ts).get(10)
            if name == "one" and c_send.AVAILABLE:
                made_in_c = p.send.counts()[0]  # type: ignore[attr-defined]
                assert made_in_c >= len(recs) - 2  # a hold may hand one over to Python
            if name == "one":
                assert p._fast
                f = p.send(topic, b"h", partition=0, headers=[("a", b"1"), ("b", None)])
                f.get(10)
        stored[name] = _stored_batches(broker, topic)
    assert stored["one"][: len(recs)] == stored["general"]
    assert stored["python"] == stored["general"]
    assert len(stored["general"]) == len(recs)
    with Consumer(socket=broker.socket, transport=transport) as c:
        c.assign([TopicPartition(f"bytes-{transport}-one", 0)])
        c.seek(TopicPartition(f"bytes-{transport}-one", 0), 0)
        got = []
        for _ in range(50):
            for rs in c.poll(timeout_ms=200).values():
                got += rs
            if len(got) >= len(recs) + 1:
                break
    assert [(r.key, r.value, r.timestamp) for r in got[: len(recs)]] == recs
    assert got[-1].headers == [("a", b"1"), ("b", None)]
