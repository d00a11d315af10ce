"""The consumer's fast paths return exactly what the general code returns, and fail the same way.

- records: edgebus.records.decode_records (C plan + one struct unpack per chunk) against the
  Python decoder in edgebus.batch, which is the specification;
- FETCH: edgebus.fastpath.fetch (a request body encoded once per assignment, a response read
  at struct level) against the generic codec in edgebus.protocol;
- the consumer: Consumer.poll over scripted FETCH responses (several batches, partial batches,
  positions inside a batch, several partitions) against a reference built with the spec decoder.
"""

from __future__ import annotations

import pickle
import struct
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgebus import batch as B
from edgebus import format as F
from edgebus import records as R
from edgebus.batch import Record
from edgebus.client import consumer as C
from edgebus.client.fetch_ahead import fetch_key, next_body, next_fetch
from edgebus.client.types import TopicPartition
from edgebus.errors import CorruptRecordError, ProtocolError
from edgebus.fastpath.fetch import FetchBody, FetchPlan, fetch_body, fetch_response
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol, ResponseFrame

pytestmark = pytest.mark.property

keys = st.one_of(st.none(), st.binary(max_size=12))
values = st.one_of(st.none(), st.binary(max_size=200))
headers = st.lists(st.tuples(st.text(max_size=6), st.one_of(st.none(), st.binary(max_size=16))), max_size=3)
record_specs = st.lists(st.tuples(st.integers(-(2**62), 2**62), keys, values, headers), min_size=1, max_size=40)


def batch_of(specs: list, base: int, append_time: int = 5) -> bytearray:
    enc = [B.encode_record(ts, k, v, h) for ts, k, v, h in specs]
    buf = bytearray(B.build_batch(enc, 1, 2))
    B.stamp_batch(buf, base, append_time)
    return buf


def spec_decode(batch: Any, topic: str, partition: int, min_offset: int) -> list[Record]:
    saved, B._fast = B._fast, None
    try:
        return B.decode_batch(batch, topic, partition, min_offset)
    finally:
        B._fast = saved


def fast_decode(batch: Any, topic: str, partition: int, min_offset: int) -> list[Record]:
    """The C path whatever the batch's size (decode_batch uses Python below a few records)."""
    h = B._checked_header(batch, F.MAX_BATCH_BYTES)
    return R.decode_records(batch, h[0], h[2], h[7], topic, partition, min_offset, Record, B._headers_at)


def fields(recs: list[Record]) -> list[tuple]:
    """Every attribute, types included (bytes, not memoryview; list headers)."""
    return [(type(r), r.topic, r.partition, r.offset, r.timestamp, type(r.key), r.key, type(r.value), r.value,
             type(r.headers), r.headers) for r in recs]


# --- records -------------------------------------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(record_specs, st.integers(0, 1000), st.integers(-3, 45), st.sampled_from([bytes, bytearray, memoryview]))
def test_fast_decode_equals_the_spec(specs, base, skip, kind):
    batch = batch_of(specs, base)
    buf = kind(batch) if kind is not memoryview else memoryview(bytes(batch))
    want = spec_decode(buf, "t", 3, base + skip)
    assert fields(fast_decode(buf, "t", 3, base + skip)) == fields(want)
    assert fields(B.decode_batch(buf, "t", 3, base + skip)) == fields(want)


@pytest.mark.parametrize("n", [R.CHUNK - 1, R.CHUNK, R.CHUNK + 1, 3 * R.CHUNK + 7])
@pytest.mark.parametrize("pattern", ["plain", "keys", "mixed"])
def test_fast_decode_across_chunks(n: int, pattern: str) -> None:
    def spec(i: int) -> tuple:
        if pattern == "plain":
            return (i, None, b"v%d" % i, [])
        if pattern == "keys":
            return (i, b"k%d" % i, b"x" * (i % 7), [])
        return (i, None if i % 3 else b"k", None if i % 5 == 0 else b"v" * (i % 11),
                [("h", None)] if i % 7 == 0 else [])

    batch = bytes(batch_of([spec(i) for i in range(n)], 1000))
    for min_offset in (0, 1000 + n // 2, 1000 + n - 1, 1000 + n, 1000 + R.CHUNK + 1):
        assert fields(fast_decode(batch, "t", 0, min_offset)) == fields(spec_decode(batch, "t", 0, min_offset))


def test_formats_are_compiled_once_per_layout() -> None:
    R._formats.clear()
    for base in range(0, 5000, 1000):
        fast_decode(bytes(batch_of([(1, None, b"x" * 100, [])] * 1000, base)), "t", 0, 0)
    assert len(R._formats) == 1


@settings(max_examples=400, deadline=None)
@given(record_specs, st.data())
def test_corrupt_records_raise_the_specs_error(specs, data):
    batch = batch_of(specs, 0)
    # Change bytes inside the records, then fix the CRC so only the record layout is wrong.
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(F.BATCH_HEADER_SIZE, len(batch) - 1))
        batch[pos] ^= data.draw(st.integers(1, 255))
    struct.pack_into("<I", batch, F.BATCH_CRC, zlib.crc32(batch[F.CRC_START:]))
    buf = bytes(batch)
    try:
        want = spec_decode(buf, "t", 0, 0)
    except CorruptRecordError as e:
        with pytest.raises(CorruptRecordError) as got:
            B.decode_batch(buf, "t", 0, 0)
        assert str(got.value) == str(e)
        with pytest.raises(ValueError):  # the C path refuses it too (decode_batch then asks Python)
            fast_decode(buf, "t", 0, 0)
        return
    assert fields(B.decode_batch(buf, "t", 0, 0)) == fields(want)
    assert fields(fast_decode(buf, "t", 0, 0)) == fields(want)


def test_bad_header_key_utf8_is_the_specs_error() -> None:
    batch = batch_of([(1, None, b"v", [("hh", b"1")])] * 10, 0)
    at = bytes(batch).index(b"hh")
    batch[at] = 0xFF
    struct.pack_into("<I", batch, F.BATCH_CRC, zlib.crc32(batch[F.CRC_START:]))
    with pytest.raises(CorruptRecordError, match="malformed"):
        B.decode_batch(bytes(batch), "t", 0, 0)


# --- Record --------------------------------------------------------------------------------------
def test_record_is_mutable_comparable_and_pickles() -> None:
    r = Record("t", 1, 2, 3, b"k", b"v")
    assert r.headers == [] and r == Record("t", 1, 2, 3, b"k", b"v", [])
    r.headers.append(("a", b"1"))
    assert r.headers == [("a", b"1")] and r != Record("t", 1, 2, 3, b"k", b"v")
    r.key, r.value, r.headers = "K", {"v": 1}, []
    assert (r.key, r.value, r.headers, r.timestamp_type) == ("K", {"v": 1}, [], 0)
    assert repr(Record("t", 0, 1, 2, None, b"x")) == \
        "Record(topic='t', partition=0, offset=1, timestamp=2, key=None, value=b'x', headers=[])"
    assert pickle.loads(pickle.dumps(r)) == r
    assert Record("t", 0, 1, 2, None, None) != ("t", 0, 1, 2, None, None, [])
    with pytest.raises(TypeError):
        hash(r)
    match r:
        case Record("t", 1, offset):
            assert offset == 2
        case _:
            pytest.fail("no match")


def test_each_record_gets_its_own_headers_list() -> None:
    recs = fast_decode(bytes(batch_of([(1, None, b"v", [])] * 20, 0)), "t", 0, 0)
    recs[0].headers.append(("x", None))
    assert [r.headers for r in recs[1:]] == [[]] * 19


# --- FETCH request and response ------------------------------------------------------------------
topics = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
fetch_partitions = st.lists(st.tuples(topics, st.integers(0, 2**31 - 1), st.integers(0, 2**63 - 1),
                                      st.integers(1, 2**31 - 1)), max_size=5)


@settings(max_examples=300, deadline=None)
@given(fetch_partitions, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), st.integers(1, 2**31 - 1))
def test_fetch_body_is_the_generic_encoding(parts, wait, min_bytes, max_bytes):
    req = M.FetchRequest(wait, min_bytes, max_bytes, [M.FetchPartition(*p) for p in parts])
    body = fetch_body(req)
    assert body.data == req.to_bytes() and body.request() == req
    assert ClientProtocol.encode_request(M.Api.FETCH, 77, body) == ClientProtocol.encode_request(M.Api.FETCH, 77, req)
    assert body.frame(77) == ClientProtocol.encode_request(M.Api.FETCH, 77, req)
    if len({p[3] for p in parts}) <= 1:  # one max_bytes for all: the consumer's plan
        plan = FetchPlan([(t, p) for t, p, _, _ in parts], min_bytes, max_bytes, parts[0][3] if parts else 1)
        assert plan.body(wait, [p[2] for p in parts]).data == req.to_bytes()
    # The fetch-ahead key ignores max_wait_ms and nothing else.
    assert fetch_body(M.FetchRequest(0, min_bytes, max_bytes, req.partitions)).key == body.key
    if parts:
        other = [M.FetchPartition(t, p, o ^ 1, mb) for t, p, o, mb in parts]
        assert fetch_body(M.FetchRequest(wait, min_bytes, max_bytes, other)).key != body.key


def test_fetch_plan_refuses_what_the_codec_refuses() -> None:
    plan = FetchPlan([("t", 0)], 1, 100, 100)
    with pytest.raises(ValueError):
        plan.body(0, [2**63])
    with pytest.raises(ValueError):
        plan.body(0, [1, 2])
    with pytest.raises(ValueError):
        M.FetchRequest(0, 1, 100, [M.FetchPartition("t", 0, 2**63, 100)]).to_bytes()


fetched = st.lists(st.builds(M.FetchedPartition, topics, st.integers(-(2**31), 2**31 - 1),
                             st.integers(-(2**15), 2**15 - 1), st.text(st.characters(codec="utf-8"), max_size=5),
                             st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1),
                             st.one_of(st.none(), st.binary(max_size=40))), max_size=4)


def as_plain(resp: M.FetchResponse) -> list[tuple]:
    return [(p.topic, p.partition, p.error_code, p.error_message, p.high_watermark, p.log_start_offset,
             None if p.records is None else (type(p.records), bytes(p.records))) for p in resp.partitions]


@settings(max_examples=300, deadline=None)
@given(fetched)
def test_fetch_response_equals_the_generic_decoder(parts):
    body = M.FetchResponse(parts).to_bytes()
    frame = ResponseFrame(1, 0, memoryview(bytearray(body)))
    assert as_plain(fetch_response(frame)) == as_plain(ClientProtocol.decode_body(M.Api.FETCH, frame))


def outcome(f: Callable[[], Any]) -> Any:
    try:
        return as_plain(f())
    except ProtocolError as e:
        return ("ProtocolError", str(e))


@settings(max_examples=500, deadline=None)
@given(fetched, st.data())
def test_broken_fetch_responses_fail_like_the_generic_decoder(parts, data):
    body = bytearray(M.FetchResponse(parts).to_bytes())
    how = data.draw(st.sampled_from(["cut", "flip", "append"]))
    if how == "cut":
        body = body[: data.draw(st.integers(0, max(0, len(body) - 1)))]
    elif how == "flip" and body:
        body[data.draw(st.integers(0, len(body) - 1))] ^= data.draw(st.integers(1, 255))
    else:
        body += data.draw(st.binary(min_size=1, max_size=8))
    frame = ResponseFrame(1, 0, memoryview(body))
    assert outcome(lambda: fetch_response(frame)) == outcome(lambda: ClientProtocol.decode_body(M.Api.FETCH, frame))


def test_fetch_response_with_an_error_code_raises_the_typed_error() -> None:
    frame = ResponseFrame(1, 5, memoryview(bytearray(M.ErrorBody("no such topic").to_bytes())))
    with pytest.raises(Exception) as want:
        ClientProtocol.decode_body(M.Api.FETCH, frame)
    with pytest.raises(type(want.value), match="no such topic"):
        fetch_response(frame)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 50), st.integers(0, 4), st.booleans(),
                          st.booleans()), min_size=1, max_size=4, unique_by=lambda x: x[0]),
       st.integers(0, 200))
def test_next_body_is_next_fetch(parts, wait):
    """The guess from an encoded body is the guess from the FetchRequest, byte for byte."""
    req_parts, resp_parts = [], []
    for p, off, nbatches, error, partial in parts:
        req_parts.append(M.FetchPartition("t", p, off, 4096))
        chunk = b"".join(bytes(batch_of([(1, None, b"v", [])] * 2, off + 2 * i)) for i in range(nbatches))
        if partial:
            chunk += bytes(batch_of([(1, None, b"v", [])], off + 2 * nbatches))[:30]
        resp_parts.append(M.FetchedPartition("t", p, 10 if error else 0, "", 99, 0, chunk))
    req = M.FetchRequest(500, 1, 1 << 20, req_parts)
    resp = M.FetchResponse(resp_parts)
    want = next_fetch(req, resp, wait)
    got = next_body(fetch_body(req), resp, wait)
    if want is None:
        assert got is None
    else:
        assert got is not None and got.data == want.to_bytes() and got.key == fetch_body(want).key
        assert fetch_key(want) == b"\0\0\0\0" + got.key


# --- the consumer --------------------------------------------------------------------------------
class ScriptedChannel:
    """A SyncChannel stand-in: FETCH answers come from a function of the requested offsets."""

    path = "scripted"

    def __init__(self, answer: Callable[[dict[tuple[str, int], int]], M.FetchResponse]) -> None:
        self.answer = answer
        self.fetches = 0

    def request(self, api: int, body: Any, timeout: float | None = None) -> Any:
        if api == M.Api.API_VERSIONS:
            return M.ApiVersionsResponse("x", [])
        assert api == M.Api.FETCH and isinstance(body, FetchBody)
        self.fetches += 1
        req = body.request()
        resp = self.answer({(p.topic, p.partition): p.offset for p in req.partitions})
        # Through the bytes, as a real answer comes.
        return fetch_response(ResponseFrame(1, 0, memoryview(bytearray(resp.to_bytes()))))

    def close(self) -> None:
        pass


def consumer_on(monkeypatch: pytest.MonkeyPatch, ch: ScriptedChannel, **kw: Any) -> C.Consumer:
    monkeypatch.setattr(C, "open_sync_channel", lambda *a, **k: ch)
    return C.Consumer(**kw)


def chunk_from(batches: list[tuple[int, list]], offset: int, partial: int = 0) -> bytes:
    """The batches a supervisor sends for offset: from the one holding it, whole, plus partial
    bytes of the next one."""
    out = b""
    later = [(base, specs) for base, specs in batches if base + len(specs) > offset]
    for base, specs in later:
        out += bytes(batch_of(specs, base))
    if partial and later:
        out += bytes(batch_of(later[0][1], 10**6))[:partial]
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 10), keys, values, headers), min_size=1, max_size=12),
                min_size=1, max_size=6),
       st.data())
def test_poll_returns_what_the_spec_decoder_reads(batch_specs, data):
    # Two partitions with the same batches; each poll's answer holds up to `per_answer` batches
    # from the requested offset (the first possibly starting before it) and maybe a partial one.
    batches, base = [], 0
    for specs in batch_specs:
        batches.append((base, specs))
        base += len(specs)
    end = base
    per_answer = data.draw(st.integers(1, 3))
    partial = data.draw(st.integers(0, 40))

    def answer(offsets: dict[tuple[str, int], int]) -> M.FetchResponse:
        out = []
        for (t, p), off in offsets.items():
            window = [(b, s) for b, s in batches if b + len(s) > off][:per_answer]
            out.append(M.FetchedPartition(t, p, 0, "", end, 0, chunk_from(window, off, partial)))
        return M.FetchResponse(out)

    start = data.draw(st.integers(0, end))
    limit = data.draw(st.integers(1, 25))
    want = {}
    for p in (0, 1):
        want[p] = [r for b, s in batches for r in spec_decode(bytes(batch_of(s, b)), "t", p, start)]
    with pytest.MonkeyPatch.context() as mp:
        c = consumer_on(mp, ScriptedChannel(answer))
        tps = [TopicPartition("t", 0), TopicPartition("t", 1)]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, start)
        got: dict[int, list[Record]] = {0: [], 1: []}
        for _ in range(200):
            polled = c.poll(0, max_records=limit)
            assert sum(map(len, polled.values())) <= limit
            assert all(type(k) is TopicPartition and rs for k, rs in polled.items())
            for tp, rs in polled.items():
                got[tp.partition] += rs
            if all(c.position(tp) == end for tp in tps):
                break
        assert {p: fields(rs) for p, rs in got.items()} == {p: fields(rs) for p, rs in want.items()}
        assert c.highwater(tps[0]) == end


def test_deserializers_are_all_or_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    batch = bytes(batch_of([(i, b"%d" % i, b"%d" % i, []) for i in range(10)], 0))
    ch = ScriptedChannel(lambda offs: M.FetchResponse(
        [M.FetchedPartition("t", 0, 0, "", 10, 0, batch if offs[("t", 0)] < 10 else b"")]))
    fail = [True]

    def vd(v: bytes) -> int:
        if v == b"7" and fail[0]:
            fail[0] = False
            raise ValueError("once")
        return int(v)

    c = consumer_on(monkeypatch, ch, value_deserializer=vd, key_deserializer=bytes.decode)
    tp = TopicPartition("t", 0)
    c.assign([tp])
    c.seek(tp, 0)
    assert [r.value for r in c.poll(0, max_records=3)[tp]] == [0, 1, 2]
    with pytest.raises(ValueError, match="once"):
        c.poll(0, max_records=6)
    assert c.position(tp) == 3
    rest = c.poll(0)[tp]
    assert [(r.offset, r.key, r.value) for r in rest] == [(i, str(i), i) for i in range(3, 10)]
    assert next(iter(c.poll(0).values()), []) == []


def test_iteration_and_seek_inside_buffered_records(monkeypatch: pytest.MonkeyPatch) -> None:
    batches = [bytes(batch_of([(b + i, None, b"%d" % (b + i), []) for i in range(5)], b)) for b in (0, 5, 10)]
    ch = ScriptedChannel(lambda offs: M.FetchResponse(
        [M.FetchedPartition("t", 0, 0, "", 15, 0, b"".join(batches[offs[("t", 0)] // 5:]))]))
    c = consumer_on(monkeypatch, ch, consumer_timeout_ms=0)
    tp = TopicPartition("t", 0)
    c.assign([tp])
    c.seek(tp, 2)
    assert [next(c).offset for _ in range(3)] == [2, 3, 4]
    c.seek(tp, 11)  # drops what was buffered
    assert [r.offset for r in c] == [11, 12, 13, 14]
    c.assign([])
    assert c.poll(0) == {}
