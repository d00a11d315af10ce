"""Kafka record batch v2 <-> edgebus batch (edgebus/server/kafka/records.py): the C loops and
the Python specification give the same bytes and the same errors; every refusal is typed; a
compressed bomb costs no more than the batch bound."""

from __future__ import annotations

import struct
import zlib

import cramjam
import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from edgebus import batch as B
from edgebus import format as F
from edgebus.errors import CorruptRecordError, RecordTooLargeError
from edgebus.server.kafka import records as R

pytestmark = pytest.mark.unit

record = st.tuples(
    st.one_of(st.none(), st.binary(max_size=40)),
    st.one_of(st.none(), st.binary(max_size=300)),
    st.lists(st.tuples(st.text(max_size=10), st.one_of(st.none(), st.binary(max_size=20))), max_size=3),
    st.integers(min_value=-1000, max_value=1000),
)


def kafka_batch(recs: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int]],
                codec: int = 0, pid: int = -1, epoch: int = -1, seq: int = -1) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False,
                                  producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                                  batch_size=1 << 30)
    for i, (k, v, hs, dt) in enumerate(recs):
        b.append(i, timestamp=1_700_000_000_000 + dt, key=k, value=v, headers=hs)
    return bytes(b.build())


def both(fn, *args):  # type: ignore[no-untyped-def]
    """fn's result (or error) with the C loops and with the Python specification."""
    out = []
    for use_c in (True, False):
        saved = R.HAVE_C
        R.HAVE_C = use_c and saved
        try:
            out.append(("ok", fn(*args)))
        except Exception as e:
            out.append((type(e).__name__, str(e).split(":")[0]))
        finally:
            R.HAVE_C = saved
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(record, min_size=1, max_size=20))
def test_round_trip_c_equals_python(recs: list) -> None:  # type: ignore[type-arg]
    kb = kafka_batch(recs, pid=9, epoch=2, seq=100)
    (c, conv_c), (p, conv_p) = both(R.kafka_batches, kb)
    assert c == p == "ok"
    assert conv_c[0].batch == conv_p[0].batch
    eb = bytes(conv_c[0].batch)
    info = B.validate_batch(eb)
    B.check_records(eb, info)
    got = B.decode_batch(eb, "t", 0)
    assert [(r.key, r.value, list(r.headers), r.timestamp) for r in got] == [
        (k, v, hs, 1_700_000_000_000 + dt) for k, v, hs, dt in recs]
    assert F.BATCH_HEADER.unpack_from(eb, 0)[10:13] == (9, 100, 2)
    # Back to Kafka: the same records (offsets from the stored base offset).
    stamped = bytearray(eb)
    B.stamp_batch(stamped, 500, 1)
    (c2, k_c), (p2, k_p) = both(R.edgebus_to_kafka, bytes(stamped))
    assert c2 == p2 == "ok" and k_c == k_p
    back = DefaultRecordBatch(k_c)
    assert back.validate_crc() and back.producer_id == 9 and back.base_sequence == 100
    assert [(m.offset, m.key, m.value, list(m.headers), m.timestamp) for m in back] == [
        (500 + i, k, v, hs, 1_700_000_000_000 + dt) for i, (k, v, hs, dt) in enumerate(recs)]


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_compressed_batches(codec: int) -> None:
    recs = [(b"k%d" % i, b"v" * 100, [("h", b"x")], i) for i in range(500)]
    plain = R.kafka_batches(kafka_batch(recs))[0].batch
    head = kafka_batch(recs)[:R.KAFKA_HEADER_SIZE]
    body = kafka_batch(recs)[R.KAFKA_HEADER_SIZE:]
    packed = {1: lambda d: bytes(cramjam.gzip.compress(d)), 2: lambda d: bytes(cramjam.snappy.compress_raw(d)),
              3: lambda d: bytes(cramjam.lz4.compress(d)), 4: lambda d: bytes(cramjam.zstd.compress(d))}[codec](body)
    assert R.kafka_batches(_reframe(head, packed, codec))[0].batch == plain


def test_xerial_snappy() -> None:
    """The Java producer's snappy framing (snappy-java): a header, then length-prefixed blocks."""
    recs = [(None, b"x%d" % i * 50, [], 0) for i in range(300)]
    kb = kafka_batch(recs)
    body = kb[R.KAFKA_HEADER_SIZE:]
    half = len(body) // 2
    framed = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    for part in (body[:half], body[half:]):
        c = bytes(cramjam.snappy.compress_raw(part))
        framed += struct.pack(">i", len(c)) + c
    assert R.kafka_batches(_reframe(kb[:R.KAFKA_HEADER_SIZE], framed, 2))[0].batch == R.kafka_batches(kb)[0].batch


def _reframe(head: bytes, records: bytes, codec: int) -> bytes:
    """A Kafka batch with `records` (compressed with `codec`) under a copy of `head`."""
    h = bytearray(head) + records
    struct.pack_into(">i", h, 8, len(h) - 12)
    attrs = struct.unpack_from(">h", h, 21)[0]
    struct.pack_into(">h", h, 21, (attrs & ~7) | codec)
    struct.pack_into(">I", h, 17, crc32c(bytes(h[21:])))
    return bytes(h)


def test_decompression_bomb_is_bounded() -> None:
    """Records that decompress past MAX_BATCH_BYTES are refused while decompressing."""
    bomb = bytes(cramjam.zstd.compress(b"\0" * (F.MAX_BATCH_BYTES + 4096)))
    assert len(bomb) < 4096
    kb = kafka_batch([(None, b"v", [], 0)])
    with pytest.raises(RecordTooLargeError):
        R.kafka_batches(_reframe(kb[:R.KAFKA_HEADER_SIZE], bomb, 4))
    gz = zlib.compress(b"\0" * (F.MAX_BATCH_BYTES + 4096))
    with pytest.raises(RecordTooLargeError):
        R.kafka_batches(_reframe(kb[:R.KAFKA_HEADER_SIZE], gz, 1))


def _mutated(kb: bytes, offset: int, value: bytes, fix_crc: bool = True) -> bytes:
    b = bytearray(kb)
    b[offset : offset + len(value)] = value
    if fix_crc:
        struct.pack_into(">I", b, 17, crc32c(bytes(b[21:])))
    return bytes(b)


GOOD = kafka_batch([(b"k", b"v", [("h", b"1")], 0), (None, b"w", [], 1)])

# (what is wrong, the bytes, the error, the start of its message)
BAD = [
    ("empty", b"", CorruptRecordError, "a Produce partition without a record batch"),
    ("short header", GOOD[:30], CorruptRecordError, "30 bytes are not a whole Kafka batch header"),
    ("length past the end", GOOD[:-1], CorruptRecordError, "Kafka batch length"),
    ("magic 1", _mutated(GOOD, 16, b"\x01"), R.UnsupportedBatchError, "Kafka batch magic 1"),
    ("crc", _mutated(GOOD, 70, b"\xff", fix_crc=False), CorruptRecordError, "Kafka batch CRC-32C mismatch"),
    ("control", _mutated(GOOD, 22, b"\x20"), R.UnsupportedBatchError, "control batches"),
    ("count vs last delta", _mutated(GOOD, 57, b"\x00\x00\x00\x05"), CorruptRecordError, "Kafka batch of 5"),
    ("unknown codec", _mutated(GOOD, 22, b"\x07"), R.UnsupportedBatchError, "unknown compression codec 7"),
    ("garbage records", _mutated(GOOD, 61, b"\xff" * 12), CorruptRecordError, "varint is cut short"),
]


@pytest.mark.parametrize(("what", "data", "error", "message"), BAD, ids=[b[0] for b in BAD])
def test_refusals_are_typed(what: str, data: bytes, error: type, message: str) -> None:
    for result in both(R.kafka_batches, data):
        assert result[0] == error.__name__, (what, result)
    with pytest.raises(error, match=message.replace("(", r"\(")):
        R.kafka_batches(data)


def test_offset_deltas_must_be_dense() -> None:
    """A batch whose records skip offsets (a compacted batch re-sent) cannot be stored densely."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    b.append(0, timestamp=1, key=None, value=b"a", headers=[])
    b.append(2, timestamp=1, key=None, value=b"b", headers=[])
    kb = bytearray(b.build())
    struct.pack_into(">i", kb, 23, 1)  # last offset delta as if dense, so only the record says so
    struct.pack_into(">I", kb, 17, crc32c(bytes(kb[21:])))
    results = both(R.kafka_batches, bytes(kb))
    assert results[0][0] == results[1][0] == "CorruptRecordError"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=61, max_value=len(GOOD) - 1))
def test_fuzzed_records_give_a_typed_error_or_records(garbage: bytes, at: int) -> None:
    data = _mutated(GOOD, at, garbage[: len(GOOD) - at])
    c, p = both(R.kafka_batches, data)
    assert c[0] == p[0] and c[0] in ("ok", "CorruptRecordError", "RecordTooLargeError",
                                     "UnsupportedBatchError"), (c, p)


def test_a_batch_larger_than_the_topic_limit_is_split() -> None:
    """A Kafka batch whose records take more than max_message_bytes as stored becomes several
    edgebus batches within it: same records, dense, base sequences continued; C and Python agree."""
    recs = [(None, b"v%d" % i * 30, [("h", b"x")] if i % 3 else [], i) for i in range(400)]
    kb = kafka_batch(recs, pid=5, epoch=0, seq=1000)
    (c, conv_c), (p, conv_p) = both(R.kafka_batches, kb, 8192)
    assert c == p == "ok"
    pieces_c, pieces_p = conv_c[0].pieces, conv_p[0].pieces
    assert len(pieces_c) > 1 and [n for _, n in pieces_c] == [n for _, n in pieces_p]
    assert [bytes(b) for b, _ in pieces_c] == [bytes(b) for b, _ in pieces_p]
    got, seq = [], 1000
    for piece, n in pieces_c:
        assert len(piece) <= 8192
        info = B.validate_batch(piece)
        assert info.record_count == n and F.BATCH_HEADER.unpack_from(piece, 0)[11] == seq
        seq += n
        got += [(r.value, list(r.headers)) for r in B.decode_batch(bytes(piece), "t", 0)]
    assert got == [(v, hs) for _, v, hs, _ in recs]
    # One record larger than the limit on its own: refused, in both.
    big = kafka_batch([(None, b"x" * 9000, [], 0)])
    assert [r[0] for r in both(R.kafka_batches, big, 8192)] == ["RecordTooLargeError"] * 2


@pytest.mark.parametrize("codec", [2, 3, 4])
def test_compressed_batch_larger_than_the_kept_buffer(codec: int) -> None:
    """Records decompressing to more than the kept 1 MiB buffer go through the bounded one."""
    recs = [(None, bytes([i % 251]) * 1000, [], 0) for i in range(3000)]  # about 3 MB
    kb = kafka_batch(recs)
    body = kb[R.KAFKA_HEADER_SIZE:]
    packed = {2: lambda d: bytes(cramjam.snappy.compress_raw(d)), 3: lambda d: bytes(cramjam.lz4.compress(d)),
              4: lambda d: bytes(cramjam.zstd.compress(d))}[codec](body)
    assert len(body) > R.SMALL_OUTPUT
    (conv,) = R.kafka_batches(_reframe(kb[:R.KAFKA_HEADER_SIZE], packed, codec))
    assert conv.batch == R.kafka_batches(kb)[0].batch


def test_compacted_away_offsets_become_an_empty_kafka_batch() -> None:
    """Offsets the log cleaner removed (FORMAT.md 4.8) are served as an empty Kafka batch that
    spans them (records_count 0, last_offset_delta covering them), so consumers step over them."""
    kept = bytearray(R.kafka_batches(kafka_batch([(b"k", b"v", [], 0)]))[0].batch)
    B.stamp_batch(kept, 105, 7)
    data = B.build_compacted(5, 100, 7, 7, 7) + bytes(kept)
    (c, kc), (p, kp) = both(R.edgebus_to_kafka, data)
    assert c == p == "ok" and kc == kp
    head = R.KAFKA_HEADER.unpack_from(kc, 0)
    assert (head[0], head[6], head[12]) == (5, 99, 0)  # base offset, last offset delta, count
    assert crc32c(kc[21:R.KAFKA_HEADER_SIZE]) == head[4]
    second = DefaultRecordBatch(kc[R.KAFKA_HEADER_SIZE:])
    assert [(m.offset, m.key, m.value) for m in second] == [(105, b"k", b"v")]


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=5000))
def test_the_batch_crc_is_zlibs_crc32(data: bytes) -> None:
    """The edgebus batches the listener builds are sealed with zlib-ng's CRC-32 (where
    installed, as pyproject asks): the same value as zlib's, which every reader checks."""
    assert R._crc32()(data) == zlib.crc32(data)


def test_zlib_ng_seals_the_batches() -> None:
    pytest.importorskip("zlib_ng", reason="zlib-ng is not installed (pip install -e .)")
    assert R._crc32().__module__ == "zlib_ng.zlib_ng"
    recs = [(b"k", b"v" * 300, [("h", b"x")], 0)] * 20
    built = R.kafka_batches(kafka_batch(recs))[0].batch
    B.validate_batch(bytes(built), compacted_ok=False)  # the CRC every reader checks
