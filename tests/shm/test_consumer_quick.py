"""The consumer's quick poll (issue 16): a standing fetch's answer decoded in one C call
(edgebus.records.fetched_records, records_fetch.c eb_plan_fetched) and taken through
ShmSyncChannel.standing_records.

- the decode: on any one-partition FETCH answer (several batches, skipped offsets, keys or none,
  headers, null values, control and compacted-away batches, a trailing partial batch, damage) it
  returns exactly the records, watermarks and next offset of the general path, or None (the
  general path then decodes it); on plain answers it is never None;
- with a real supervisor and real producers, on both transports: every record in order with
  every field, through the quick path, also when answers it does not take (headers, null values,
  a seek, a pause) come in between.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus import batch as B
from edgebus import format as F
from edgebus import records as R
from edgebus.batch import Record
from edgebus.fastpath.standing import end_offset
from edgebus.fastpath.strings import wire_str

keys = st.one_of(st.none(), st.binary(max_size=12))
values = st.one_of(st.none(), st.binary(max_size=120))
headers = st.lists(st.tuples(st.text(max_size=4), st.one_of(st.none(), st.binary(max_size=8))),
                   max_size=2)
# (kind, records): a batch of records, a control batch, or a compacted-away run of offsets
batches = st.lists(st.tuples(st.sampled_from(["records", "records", "records", "control",
                                              "compacted"]),
                             st.lists(st.tuples(st.integers(-(2**40), 2**40), keys, values,
                                                headers), min_size=1, max_size=6)),
                   min_size=1, max_size=5)


def _want(topic: str, partition: int) -> bytes:
    return F.ARRAY_COUNT.pack(1) + wire_str(topic) + F.I32.pack(partition)


def _batch(kind: str, specs: list, base: int) -> bytearray:
    if kind == "compacted":
        return bytearray(B.build_compacted(base, len(specs), 7, 1, 2))
    buf = bytearray(B.build_batch([B.encode_record(ts, k, v, h) for ts, k, v, h in specs], 1, 2))
    if kind == "control":
        buf[F.BATCH_ATTRIBUTES] |= F.ATTR_CONTROL
        struct.pack_into("<I", buf, F.BATCH_CRC, zlib.crc32(buf[F.CRC_START:]))
    B.stamp_batch(buf, base, 7)
    return buf


def _body(topic: str, partition: int, chunk: bytes, hw: int = 99, ls: int = 0,
          error: int = 0) -> bytes:
    return (F.ARRAY_COUNT.pack(1) + wire_str(topic)
            + F.FETCHED_PARTITION_RUN.pack(partition, error, 0, hw, ls, len(chunk)) + chunk)


def _general(chunk: bytes, topic: str, partition: int, pos: int) -> list[Record]:
    """What Consumer._fetch's general path buffers (the spec decoder of edgebus.batch)."""
    out: list[Record] = []
    for b in B.iter_batches(chunk):
        out += B.decode_batch(b, topic, partition, pos)
    return out


def _fields(recs: list[Record]) -> list[tuple]:
    return [(type(r), r.topic, r.partition, r.offset, r.timestamp, type(r.key), r.key,
             type(r.value), r.value, r.headers) for r in recs]


def _plain(recs: list[Record]) -> bool:
    """An answer the quick path must take: no headers, no null values, keys all or none."""
    return bool(recs) and all(not r.headers and r.value is not None for r in recs) and \
        len({r.key is None for r in recs}) == 1 and \
        [r.offset for r in recs] == list(range(recs[0].offset, recs[0].offset + len(recs)))


@settings(max_examples=300, deadline=None)
@given(batches, st.integers(0, 1000), st.integers(-2, 12), st.integers(0, 70), st.data())
def test_quick_decode_is_the_general_decode_or_declines(spec, base, skip, cut, data):
    chunk = bytearray()
    off = base
    for kind, specs in spec:
        chunk += _batch(kind, specs, off)
        off += len(specs)
    damage = data.draw(st.sampled_from(["none", "none", "crc", "length", "partial"]))
    if damage == "crc":
        at = data.draw(st.integers(F.CRC_START, len(chunk) - 1))
        chunk[at] ^= 0x40
    elif damage == "length":
        struct.pack_into("<I", chunk, F.BATCH_LENGTH, 12)
    elif damage == "partial":
        chunk += _batch("records", [(1, None, b"late", [])], off)[: max(1, cut)]
    pos = base + skip
    body = _body("tq", 3, bytes(chunk), hw=off + 5, ls=base)
    try:
        want = _general(bytes(chunk), "tq", 3, pos)
    except Exception:
        want = None  # the general path raises: the quick path must decline
    got = R.fetched_records(memoryview(body), _want("tq", 3), pos, "tq", 3, Record)
    if got is None:
        assert want is None or not _plain(want)
        return
    assert want is not None
    recs, hw, ls, end = got
    assert _fields(recs) == _fields(want)
    assert (hw, ls, end) == (off + 5, base, end_offset(bytes(chunk)))


@pytest.mark.parametrize("skip", [0, 1, 3])
@pytest.mark.parametrize("keyed", [False, True])
def test_plain_answers_take_the_quick_path(skip: int, keyed: bool) -> None:
    chunk = b"".join(bytes(_batch("records", [(10 + i, b"k%d" % i if keyed else None,
                                               b"v" * (i + b), []) for i in range(3)], 40 + 3 * b))
                     for b in range(3))
    body = _body("tq", 0, chunk, hw=49, ls=2)
    got = R.fetched_records(body, _want("tq", 0), 40 + skip, "tq", 0, Record)
    assert got is not None
    recs, hw, ls, end = got
    assert _fields(recs) == _fields(_general(chunk, "tq", 0, 40 + skip))
    assert (hw, ls, end) == (49, 2, 49)


def test_answers_for_something_else_are_declined() -> None:
    chunk = bytes(_batch("records", [(1, None, b"v", [])], 0))
    want = _want("tq", 0)
    assert R.fetched_records(_body("tq", 0, chunk), want, 0, "tq", 0, Record) is not None
    assert R.fetched_records(_body("tq", 1, chunk), want, 0, "tq", 0, Record) is None
    assert R.fetched_records(_body("tr", 0, chunk), want, 0, "tq", 0, Record) is None
    assert R.fetched_records(_body("tq", 0, chunk, error=1), want, 0, "tq", 0, Record) is None
    assert R.fetched_records(_body("tq", 0, chunk) + b"x", want, 0, "tq", 0, Record) is None
    assert R.fetched_records(_body("tq", 0, chunk), want, 1, "tq", 0, Record) is None  # none kept


# --- with a real supervisor ----------------------------------------------------------------------
def _read(c: Consumer, tp: TopicPartition, n: int) -> list[Record]:
    got: list[Record] = []
    for _ in range(400):
        got += c.poll(100).get(tp, [])
        if len(got) >= n:
            break
    return got


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_records_in_order_through_the_quick_path_and_past_what_it_declines(broker, transport):
    topic = f"quick-{transport}"
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(topic, 1)
    tp = TopicPartition(topic, 0)
    c = Consumer(socket=broker.socket, transport=transport, auto_offset_reset="earliest",
                 fetch_max_wait_ms=200)
    c.assign([tp])
    sent: list[tuple[Any, ...]] = []
    with Producer(socket=broker.socket, transport=transport, linger_ms=0) as p:
        def send(key: bytes | None, value: bytes | None, hdrs: Any = None) -> None:
            p.send(topic, value, key=key, partition=0, headers=hdrs).get(10)
            sent.append((key, value, hdrs or []))

        send(None, b"first")
        assert len(_read(c, tp, 1)) == 1  # the standing fetch is armed from here on
        got: list[Record] = []
        for i in range(60):
            if i % 20 == 7:
                send(b"k", b"with a header", [("h", b"1")])  # declined: the general path
            elif i % 20 == 13:
                send(b"tomb", None)  # a null value: declined too
            else:
                send(b"k%d" % i if i % 3 else None, b"v%d" % i)
            got += _read(c, tp, 1)
        got += _read(c, tp, len(sent) - 1 - len(got))
        quick = c._ch.quick_answers
        # a seek back: the position no longer matches the standing fetch (general path), then
        # quick again
        c.seek(tp, 1)
        again = _read(c, tp, len(sent) - 1)
        c.pause(tp)
        assert c.poll(50) == {}
        c.resume(tp)
        send(None, b"after resume")
        last = _read(c, tp, 1)
    c.close()
    assert [(r.offset, r.key, r.value, r.headers) for r in got] == \
        [(i + 1, *s) for i, s in enumerate(sent[1:-1])]
    assert [(r.offset, r.key, r.value) for r in again] == [(r.offset, r.key, r.value) for r in got]
    assert [(r.offset, r.value) for r in last] == [(len(sent) - 1, b"after resume")]
    # Most answers came through the quick path (the declined ones and the first did not).
    assert quick >= 40, f"only {quick} of {len(sent)} answers took the quick path"
