"""The supervisor's data-plane fast paths answer exactly as the generic paths do.

An in-process Broker (no listening socket, no loop) with connections whose responses are captured
as the shared-memory transport would take them. Checked here:
- a parked fetch answered from the batch just appended gets the bytes read_fetch would give;
- a fetch parked without reading (every partition at its log end) parks exactly when the
  read-based decision would;
- PRODUCE frames, malformed or refused, get the same errors and connection state through the
  struct-level path as through the generic codec and handler.
"""

from __future__ import annotations

import selectors
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgebus import batch as B
from edgebus import errors as E
from edgebus.log.manager import LogManager
from edgebus.log.topic_config import TopicConfig
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol, RequestFrame, ServerProtocol
from edgebus.server.broker import Broker
from edgebus.server.handlers.data import MAX_PARKED_FETCHES_PER_CONNECTION
from edgebus.server.listeners.stream import Connection
from edgebus.server.stats import Stats

pytestmark = pytest.mark.unit


class CapturingLink:
    """Stands in for ShmLink on a connection: every response frame lands in `frames`."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def queue(self, data: bytes) -> bool:
        self.frames.append(bytes(data))
        return True


class Harness:
    def __init__(self, root: Path) -> None:
        self.logs = LogManager(root / "data")
        self.logs.open()
        self.b = Broker(self.logs, root / "s.sock")
        self._socks: list[socket.socket] = []
        self._next = 1

    def conn(self) -> Connection:
        a, peer = socket.socketpair()
        self._socks += [a, peer]
        c = Connection(a, self.b.loop)
        c.max_output = 1 << 30
        c.shm = CapturingLink()
        c.id = self._next  # as Loop.adopt does, but also while the test says it is stopping
        self._next += 1
        self.b.loop.conns[c.id] = c
        self.b.loop.sel.register(a, selectors.EVENT_READ, c.on_event)
        return c

    def send(self, conn: Connection, api: int, corr: int, body: bytes, version: int = 0) -> None:
        """A request as ShmLink._dispatch_all hands it over: a writable slice of the read buffer."""
        frame = bytearray(struct.pack("<HHI", api, version, corr) + body)
        self.b.loop.dispatch(conn, api, version, corr, memoryview(frame)[8:])

    def close(self) -> None:
        self.b.durable.close()
        self.logs.close()
        self.b.loop.sel.close()
        for s in self._socks:
            s.close()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def batch(values: list[bytes], ts: int = 5, headers: bool = False) -> bytes:
    recs = [B.encode_record(ts + i, b"k%d" % i if headers else None, v, [("h", v[:3])] if headers else [])
            for i, v in enumerate(values)]
    return B.build_batch(recs, ts, ts + len(values) - 1)


def produce_body(topic: str, b: bytes, acks: int = 1, partition: int = 0) -> bytes:
    return M.ProduceRequest(topic, partition, acks, b).to_bytes()


def fetch_request(parts: list[tuple[str, int, int, int]], min_bytes: int = 1, max_bytes: int = 1 << 20,
                  wait: int = 10_000) -> M.FetchRequest:
    return M.FetchRequest(wait, min_bytes, max_bytes, [M.FetchPartition(*p) for p in parts])


def read_answer(h: Harness, corr: int, req: M.FetchRequest) -> bytes:
    """The answer the read-based path gives for `req` now (the log is not changed by reading)."""
    resp, _ = h.b.data.read_fetch(req)
    return ServerProtocol.encode_response(corr, resp)


def decode(frame: bytes, api: int) -> Any:
    proto = ClientProtocol()
    proto.receive_data(frame)
    resp = proto.next_response()
    assert resp is not None and proto.frames.buffered() == 0
    return ClientProtocol.decode_body(api, resp)


def count_answers(h: Harness, method: str) -> list[bool]:
    """Record, per call of the DataHandlers method, whether it answered (returned not None)."""
    used: list[bool] = []
    inner = getattr(h.b.data, method)

    def spy(*args: Any) -> Any:
        out = inner(*args)
        used.append(out is not None)
        return out

    setattr(h.b.data, method, spy)
    return used


def count_fast_answers(h: Harness) -> list[bool]:
    """Record, per call, whether DataHandlers.fetch_appended answered from the batch."""
    return count_answers(h, "fetch_appended")


# --- a parked fetch answered from the appended batch ---------------------------------------------
step = st.tuples(
    st.lists(st.binary(max_size=700), min_size=1, max_size=4),  # the batch's record values
    st.booleans(),  # keys and headers
    st.sampled_from([1, 1, 100, 1 << 20]),  # min_bytes
    st.sampled_from([1, 64, 200, 1 << 20]),  # the request's max_bytes
    st.sampled_from([1, 100, 1 << 20]),  # the partition's max_bytes
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(step, min_size=1, max_size=12), st.sampled_from([2000, 1 << 20]), st.sampled_from([0, 300]))
def test_parked_fetch_answered_from_the_batch_equals_the_read_answer(tmp_path_factory, steps, segment_bytes,
                                                                     interval):
    h = Harness(tmp_path_factory.mktemp("b"))
    try:
        h.logs.create_topic("t", TopicConfig(partitions=1, segment_bytes=segment_bytes,
                                             index_interval_bytes=interval))
        used = count_fast_answers(h)
        producer, consumer = h.conn(), h.conn()
        p = h.logs.partition("t", 0)
        for i, (values, headers, min_bytes, max_bytes, part_max) in enumerate(steps):
            req = fetch_request([("t", 0, p.log_end_offset, part_max)], min_bytes, max_bytes)
            h.send(consumer, M.Api.FETCH, 1000 + i, req.to_bytes())
            assert consumer.shm.frames == [] and consumer.parked == 1
            b = batch(values, headers=headers)
            h.send(producer, M.Api.PRODUCE, i, produce_body("t", b))
            ack = decode(producer.shm.frames.pop(), M.Api.PRODUCE)
            assert (ack.topic, ack.partition, ack.base_offset) == ("t", 0, req.partitions[0].offset)
            if len(b) < min_bytes:  # not enough yet: it stays parked (and is dropped here)
                assert consumer.shm.frames == [] and used[-1] is False
                h.b.data.waiters.remove(h.b.data.waiters.all()[0])
                continue
            assert used[-1] is True
            (got,) = consumer.shm.frames
            consumer.shm.frames.clear()
            assert got == read_answer(h, 1000 + i, req)
            stamped = decode(got, M.Api.FETCH).partitions[0].records
            assert bytes(stamped[16:]) == b[16:]  # the producer's bytes, stamped
            assert struct.unpack_from("<qq", stamped) == (ack.base_offset, ack.append_time)
    finally:
        h.close()


def test_other_waiters_are_answered_by_reading(h):
    h.logs.create_topic("t", TopicConfig(partitions=2))
    producer = h.conn()
    h.send(producer, M.Api.PRODUCE, 1, produce_body("t", batch([b"first"])))
    used = count_fast_answers(h)
    behind, at_end, two, large_min = h.conn(), h.conn(), h.conn(), h.conn()
    reqs = {
        behind: fetch_request([("t", 0, 0, 1 << 20)], min_bytes=10_000),  # parked: not enough yet
        at_end: fetch_request([("t", 0, 1, 1 << 20)]),
        two: fetch_request([("t", 1, 0, 1 << 20), ("t", 0, 1, 1 << 20)]),
        large_min: fetch_request([("t", 0, 1, 1 << 20)], min_bytes=150),  # the batch is 186 bytes
    }
    for c, req in reqs.items():
        h.send(c, M.Api.FETCH, 7, req.to_bytes())
        assert c.parked == 1 and not c.shm.frames
    h.send(producer, M.Api.PRODUCE, 2, produce_body("t", batch([b"x" * 100])))
    assert sorted(used) == [False, False, True, True]  # at_end and large_min from the batch
    for c in (at_end, two, large_min):
        (got,) = c.shm.frames
        assert got == read_answer(h, 7, reqs[c])
    assert behind.shm.frames == [] and behind.parked == 1  # 2 batches still below min_bytes
    h.send(producer, M.Api.PRODUCE, 3, produce_body("t", batch([b"y" * 10_000])))
    (got,) = behind.shm.frames
    assert got == read_answer(h, 7, reqs[behind])
    assert len(decode(got, M.Api.FETCH).partitions[0].records) > 10_000


def test_a_batch_not_stamped_in_place_is_read_back(h):
    """A read-only batch is copied by the log before stamping: the caller's bytes are stale."""
    h.logs.create_topic("t", TopicConfig())
    consumer = h.conn()
    req = fetch_request([("t", 0, 0, 1 << 20)])
    h.send(consumer, M.Api.FETCH, 3, req.to_bytes())
    used = count_fast_answers(h)
    out = h.b.data.produce_fields(h.conn(), 1, "t", 0, 1, batch([b"v"]))  # bytes: read-only
    assert used == [False]
    (got,) = consumer.shm.frames
    assert got == read_answer(h, 3, req)
    assert decode(out, M.Api.PRODUCE).base_offset == 0


def test_answers_from_the_batch_count_as_read_answers_in_stats(h):
    h.logs.create_topic("t", TopicConfig())
    producer, consumer = h.conn(), h.conn()
    expected = Stats()
    for i in range(5):
        req = fetch_request([("t", 0, i * 3, 1 << 20)])
        h.send(consumer, M.Api.FETCH, i, req.to_bytes())
        h.send(producer, M.Api.PRODUCE, i, produce_body("t", batch([b"a", b"bb", b"ccc"])))
        expected.fetch_sent(decode(consumer.shm.frames[-1], M.Api.FETCH))
    st_ = h.b.stats
    assert (st_.records_out, st_.batches_out, st_.bytes_out) == (15, 5, expected.bytes_out)
    assert (expected.records_out, expected.batches_out) == (15, 5)
    assert h.b.stats.records_in == 15


# --- parking without reading ---------------------------------------------------------------------
CASES = {
    "at end": ([("t", 0, 2, 100)], 1, 1000),
    "behind": ([("t", 0, 1, 100)], 1, 1000),
    "behind, min_bytes not met": ([("t", 0, 1, 100)], 10_000, 1000),
    "at end, min_bytes 0": ([("t", 0, 2, 100)], 0, 1000),
    "at end, no wait": ([("t", 0, 2, 100)], 1, 0),
    "beyond end": ([("t", 0, 3, 100)], 1, 1000),
    "below start": ([("t", 0, -1, 100)], 1, 1000),
    "unknown topic": ([("nope", 0, 0, 100)], 1, 1000),
    "unknown partition": ([("t", 5, 0, 100)], 1, 1000),
    "internal topic at end": ([("__consumer_offsets", 0, 0, 100)], 1, 1000),
    "two at end": ([("t", 0, 2, 100), ("t", 1, 0, 100)], 1, 1000),
    "one at end, one behind": ([("t", 0, 2, 100), ("t", 0, 0, 100)], 1, 1000),
    "zero partitions": ([], 1, 1000),
}


@pytest.mark.parametrize("stopping", [False, True])
@pytest.mark.parametrize("name", sorted(CASES))
def test_parking_without_reading_decides_as_reading_does(h, name, stopping):
    parts, min_bytes, wait = CASES[name]
    h.logs.create_topic("t", TopicConfig(partitions=2))
    producer = h.conn()
    for i in range(2):
        h.send(producer, M.Api.PRODUCE, i, produce_body("t", batch([b"v%d" % i])))
    req = fetch_request(parts, min_bytes, wait=wait)
    h.b.loop.stopping = stopping
    outcomes = []
    for shortcut in (True, False):
        c = h.conn()
        if not shortcut:
            h.b.data._all_at_end = lambda req: False  # type: ignore[method-assign]
        h.send(c, M.Api.FETCH, 9, req.to_bytes())
        outcomes.append((c.parked, c.shm.frames))
        for w in h.b.data.waiters.all():
            h.b.data.waiters.remove(w)
    assert outcomes[0] == outcomes[1]


def test_the_parked_fetch_limit_holds_on_the_shortcut(h):
    h.logs.create_topic("t", TopicConfig())
    c = h.conn()
    for i in range(MAX_PARKED_FETCHES_PER_CONNECTION + 2):
        h.send(c, M.Api.FETCH, i, fetch_request([("t", 0, 0, 100)]).to_bytes())
    assert c.parked == MAX_PARKED_FETCHES_PER_CONNECTION
    assert len(c.shm.frames) == 2  # answered at once, empty
    assert decode(c.shm.frames[0], M.Api.FETCH).partitions[0].records == b""


# --- PRODUCE errors: the struct-level path against the generic one -------------------------------
GOOD = batch([b"value"])
BAD_CRC = GOOD[:-1] + bytes([GOOD[-1] ^ 1])
BODIES = {
    "empty": b"",
    "one byte": b"\x01",
    "topic overruns": b"\x09\x00t",
    "topic not UTF-8": b"\x01\x00\xff" + struct.pack("<ibi", 0, 1, len(GOOD)) + GOOD,
    "no batch length": b"\x01\x00t" + struct.pack("<ib", 0, 1),
    "negative batch length": b"\x01\x00t" + struct.pack("<ibi", 0, 1, -5) + GOOD,
    "batch overruns": b"\x01\x00t" + struct.pack("<ibi", 0, 1, len(GOOD) + 1) + GOOD,
    "trailing bytes": produce_body("t", GOOD) + b"\x00",
    "null batch": b"\x01\x00t" + struct.pack("<ibi", 0, 1, -1),
    "bad acks": produce_body("t", GOOD, acks=7),
    "negative acks": produce_body("t", GOOD, acks=-1),
    "internal topic": produce_body("__consumer_offsets", GOOD),
    "unknown topic": produce_body("nope", GOOD),
    "unknown partition": produce_body("t", GOOD, partition=3),
    "negative partition": produce_body("t", GOOD, partition=-1),
    "bad CRC": produce_body("t", BAD_CRC),
    "short batch": produce_body("t", GOOD[:40]),
    "garbage batch": produce_body("t", b"\x00" * 100),
    "too large": produce_body("small", batch([b"x" * 300])),
    "acks none": produce_body("t", GOOD, acks=0),
    "acks durable": produce_body("t", GOOD, acks=2),
    "ok": produce_body("t", GOOD),
}


def run_generic(h: Harness, conn: Connection, corr: int, body: bytes) -> None:
    """The path every PRODUCE took before: the dataclass decoder and DataHandlers.produce."""
    frame = bytearray(body)
    req = RequestFrame(M.Api.PRODUCE, 0, corr, memoryview(frame))
    conn.requests += 1

    def decode_and_handle(conn: Connection, corr: int, req: RequestFrame) -> Any:
        return h.b.data.produce(conn, corr, M.ProduceRequest.from_bytes(req.body))

    h.b.dispatcher._handle(conn, M.Api.PRODUCE, corr, decode_and_handle, (req,))


@pytest.mark.parametrize("stopping", [False, True])
@pytest.mark.parametrize("name", sorted(BODIES))
def test_produce_frames_get_the_generic_answers(h, name, stopping):
    h.logs.create_topic("t", TopicConfig())
    h.logs.create_topic("small", TopicConfig(max_message_bytes=200))
    h.b.loop.stopping = stopping
    body = BODIES[name]
    results = []
    for fast in (True, False):
        c = h.conn()
        if fast:
            h.send(c, M.Api.PRODUCE, 41, body)
        else:
            run_generic(h, c, 41, body)
        answers = []
        for frame in c.shm.frames:
            proto = ClientProtocol()
            proto.receive_data(frame)
            resp = proto.next_response()
            assert resp is not None and resp.correlation_id == 41
            if resp.error_code:
                answers.append((resp.error_code, str(E.error_for_code(resp.error_code, bytes(resp.body[2:]).decode()))))
            else:
                ack = ClientProtocol.decode_body(M.Api.PRODUCE, resp)
                answers.append((ack.topic, ack.partition, ack.log_start_offset))
        durable = [(w.correlation_id, type(w.response).__name__) for w in h.b.durable.committer.pending_waiters
                   if w.conn is c]
        results.append((answers, c.closed, c.requests, durable))
    assert results[0] == results[1]
    answers, closed, _, durable = results[0]
    expected = EXPECTED.get(name)
    if expected is None:
        return
    if stopping and expected != E.ProtocolError.code:
        expected = E.ShuttingDownError.code
    if expected == "ack":
        assert answers == [("t", 0, 0)] and not durable
    elif expected == "none":
        assert answers == [] and not durable
    elif expected == "durable":
        assert answers == [] and durable == [(41, "ProduceResponse")]
    else:
        assert [a[0] for a in answers] == [expected] and not durable
    assert closed == (expected == E.ProtocolError.code)  # a malformed body closes the connection


# What each PRODUCE body gets (FORMAT.md 7.2).
EXPECTED: dict[str, Any] = {
    **dict.fromkeys(["empty", "one byte", "topic overruns", "topic not UTF-8", "no batch length",
                     "negative batch length", "batch overruns", "trailing bytes"], E.ProtocolError.code),
    "null batch": E.InvalidRequestError.code,
    "bad acks": E.InvalidRequestError.code,
    "negative acks": E.InvalidRequestError.code,
    "internal topic": E.InvalidTopicError.code,
    "unknown topic": E.UnknownTopicError.code,
    "unknown partition": E.UnknownPartitionError.code,
    "negative partition": E.UnknownPartitionError.code,
    "bad CRC": E.CorruptRecordError.code,
    "short batch": E.CorruptRecordError.code,
    "garbage batch": E.CorruptRecordError.code,
    "too large": E.RecordTooLargeError.code,
    "acks none": "none",
    "acks durable": "durable",
    "ok": "ack",
}


def test_a_produce_of_another_version_is_refused_and_the_connection_stays(h):
    h.logs.create_topic("t", TopicConfig())
    c = h.conn()
    h.send(c, M.Api.PRODUCE, 5, produce_body("t", GOOD), version=1)
    (frame,) = c.shm.frames
    with pytest.raises(E.UnsupportedVersionError):
        decode(frame, M.Api.PRODUCE)
    assert not c.closed and h.logs.partition("t", 0).log_end_offset == 0


def test_a_produce_is_decoded_once_by_the_struct_level_decoder(h, monkeypatch):
    """Issue 10: a PRODUCE is decoded once on the hot path, by the fast decoder, never also by
    the request dataclass (that its batch is a slice of the frame, not a copy:
    test_fastpath_codec.py::test_the_batch_is_a_writable_slice_of_the_frame)."""
    import edgebus.server.dispatch as D

    h.logs.create_topic("t", TopicConfig())
    seen: list[int] = []
    fast = D.decode_produce

    def counting(body: memoryview) -> Any:
        seen.append(len(body))
        return fast(body)

    def generic(*args: Any) -> Any:
        raise AssertionError("the generic decoder ran on a version-0 PRODUCE")

    monkeypatch.setattr(D, "decode_produce", counting)
    monkeypatch.setattr(D, "decode_request", generic)
    monkeypatch.setattr(M.ProduceRequest, "decode", classmethod(generic))
    c = h.conn()
    for corr in (1, 2, 3):
        h.send(c, M.Api.PRODUCE, corr, produce_body("t", GOOD))
    assert len(seen) == 3
    acks = [decode(f, M.Api.PRODUCE) for f in c.shm.frames]
    assert [(a.topic, a.base_offset) for a in acks] == [("t", 0), ("t", 1), ("t", 2)]
    assert h.logs.partition("t", 0).log_end_offset == 3
