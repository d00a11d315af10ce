"""FETCH (version 0) at struct level: the consumer's request bodies and response decoder, the
supervisor's request decoder and response encoders.

A consumer sends one FETCH per poll and reads one response. Through the generic dataclass codec
that costs ~10 us a poll, more than everything else when a poll brings one record: a
FetchRequest and a FetchPartition per partition made and encoded (twice with fetch-ahead, which
also compares requests by their bytes), and the response decoded field by field. Here a
`FetchPlan` encodes the body once per assignment and limits; a poll packs its offsets and
max_wait_ms into it with one precompiled Struct. `fetch_response` reads a response with a few
struct calls and hands anything unusual (truncated, a bad length, trailing bytes) to the generic
decoder, so errors are the generic codec's. On the supervisor's side `decode_fetch` takes a
one-partition request and `encode_fetch` / `encode_fetched_one` write the response. Bytes and
results are exactly those of edgebus.protocol.messages (docs/FORMAT.md, FETCH);
tests/shm/test_consumer_fast.py and tests/test_fastpath_codec.py compare the two on many inputs.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from edgebus import format as F
from edgebus.fastpath.strings import topic_name, wire_str
from edgebus.protocol import messages as M
from edgebus.protocol.codec import EncodedRequest
from edgebus.protocol.framing import ClientProtocol, ResponseFrame

_FETCH = int(M.Api.FETCH)
_COUNT = F.ARRAY_COUNT
_STR = F.STR_LENGTH
_STR_LEN = F.STR_LENGTH.size
_REQ = F.FETCH_REQUEST_RUN  # max_wait_ms, min_bytes, max_bytes, partition count
_PART = F.FETCH_PARTITION_RUN  # partition, offset, max_bytes
_AFTER_WAIT = F.FETCH_REQUEST_MIN_BYTES  # a body's bytes from min_bytes on
_FROM_OFFSET = _PART.size - F.FETCH_PARTITION_OFFSET  # a FetchPartition's bytes from `offset` on (12)
_AFTER_OFFSET = _FROM_OFFSET - struct.calcsize("<q")  # ... after `offset` (max_bytes, 4)
_HEAD = F.FETCHED_PARTITION_HEAD  # FetchedPartition: partition, error_code, error_message length
_TAIL = F.FETCHED_PARTITION_TAIL  # high_watermark, log_start_offset, records length
_RUN = F.FETCHED_PARTITION_RUN  # _HEAD then _TAIL: the fields when error_message is empty
_HEAD_SIZE, _TAIL_SIZE, _RUN_SIZE = _HEAD.size, _TAIL.size, _RUN.size
# The response header, then the partition count: one pack for a one-partition response.
_HEAD_AND_COUNT = struct.Struct(F.RESPONSE_HEADER.format + _COUNT.format.lstrip("<"))
_RESPONSE_MIN = F.RESPONSE_MIN_LENGTH


# --- the consumer ---------------------------------------------------------------------------------
class FetchPlan:
    """FETCH bodies for one list of partitions and one set of limits. Each body is the template
    with max_wait_ms and the partitions' offsets packed in (one Struct.pack call)."""

    __slots__ = ("_pack", "keys", "limits")

    def __init__(self, keys: Sequence[tuple[str, int]], min_bytes: int, max_bytes: int,
                 partition_max_bytes: int | Sequence[int]) -> None:
        self.keys = tuple((t, p) for t, p in keys)
        pmax = [partition_max_bytes] * len(self.keys) if isinstance(partition_max_bytes, int) \
            else list(partition_max_bytes)
        self.limits = (min_bytes, max_bytes, partition_max_bytes)
        # The generic encoding, cut around the variable fields: max_wait_ms (the body's first
        # 4 bytes) and each FetchPartition's offset (the 12 bytes before its end are offset and
        # max_bytes).
        head = M.FetchRequest(0, min_bytes, max_bytes, []).to_bytes()[_AFTER_WAIT : -_COUNT.size]
        parts = [M.FetchPartition(t, p, 0, mb).to_bytes() for (t, p), mb in zip(self.keys, pmax, strict=True)]
        fmt = ["<i"]
        consts: list[bytes] = []
        fixed = head + _COUNT.pack(len(parts))
        for enc in parts:
            fixed += enc[:-_FROM_OFFSET]
            fmt += [f"{len(fixed)}s", "q"]
            consts.append(fixed)
            fixed = enc[-_AFTER_OFFSET:]
        fmt.append(f"{len(fixed)}s")
        consts.append(fixed)
        st = struct.Struct("".join(fmt))
        if len(parts) == 1:  # the common case, without the general interleaving
            c0, c1 = consts

            def pack(wait: int, offsets: Sequence[int]) -> bytes:
                (off,) = offsets
                return st.pack(wait, c0, off, c1)
        else:
            def pack(wait: int, offsets: Sequence[int]) -> bytes:
                return st.pack(wait, *_interleave(consts, offsets))
        self._pack: Callable[[int, Sequence[int]], bytes] = pack

    @classmethod
    def of(cls, req: M.FetchRequest) -> FetchBody:
        """The body of a FetchRequest (any request: per-partition max_bytes may differ)."""
        plan = cls([(p.topic, p.partition) for p in req.partitions], req.min_bytes, req.max_bytes,
                   [p.max_bytes for p in req.partitions])
        return plan.body(req.max_wait_ms, [p.offset for p in req.partitions])

    def body(self, max_wait_ms: int, offsets: Sequence[int]) -> FetchBody:
        """The body asking for keys[i] from offsets[i]."""
        try:
            data = self._pack(max_wait_ms, offsets)
        except struct.error as e:
            raise ValueError(f"cannot encode FETCH max_wait_ms={max_wait_ms} offsets={offsets}: {e}") \
                from None
        return FetchBody(self, max_wait_ms, tuple(offsets), data)


def _interleave(consts: list[bytes], offsets: Sequence[int]) -> list[Any]:
    if len(offsets) != len(consts) - 1:
        raise ValueError(f"{len(offsets)} offsets for {len(consts) - 1} partitions")
    out: list[Any] = [None] * (2 * len(offsets) + 1)
    out[0::2] = consts
    out[1::2] = offsets
    return out


class FetchBody(EncodedRequest):
    """An encoded FetchRequest body; `key` is the body without max_wait_ms (fetch-ahead matches
    requests by it)."""

    __slots__ = ("data", "max_wait_ms", "offsets", "plan")
    api_key: ClassVar[int] = _FETCH

    def __init__(self, plan: FetchPlan, max_wait_ms: int, offsets: tuple[int, ...], data: bytes) -> None:
        self.plan = plan
        self.max_wait_ms = max_wait_ms
        self.offsets = offsets
        self.data = data

    def frame(self, correlation_id: int) -> bytes:
        """The whole request frame: ClientProtocol.encode_request(FETCH, correlation_id, self)."""
        data = self.data
        return F.REQUEST_HEADER.pack(F.REQUEST_MIN_LENGTH + len(data), _FETCH, 0, correlation_id) + data

    @property
    def key(self) -> bytes:
        return self.data[_AFTER_WAIT:]

    def with_offsets(self, offsets: Sequence[int], max_wait_ms: int) -> FetchBody:
        return self.plan.body(max_wait_ms, offsets)

    def request(self) -> M.FetchRequest:
        """The FetchRequest this body encodes (for tests and logs)."""
        req: M.FetchRequest = M.FetchRequest.from_bytes(self.data)
        return req


def fetch_body(body: FetchBody | M.FetchRequest) -> FetchBody:
    return body if isinstance(body, FetchBody) else FetchPlan.of(body)


def fetch_response(frame: ResponseFrame) -> M.FetchResponse:
    """The FetchResponse in a FETCH response frame; raises the typed error it carries, and the
    generic codec's ProtocolError for a malformed body."""
    if not frame.error_code:
        fast = _decode(frame.body)
        if fast is not None:
            return fast
    resp: M.FetchResponse = ClientProtocol.decode_body(_FETCH, frame)  # errors, anything unusual
    return resp


def _decode(body: memoryview) -> M.FetchResponse | None:
    """The response, or None for anything the generic decoder must look at (it raises)."""
    end = len(body)
    try:
        n = _COUNT.unpack_from(body, 0)[0]
        if n < 0 or n > end - 4:
            return None
        pos = 4
        parts: list[M.FetchedPartition] = []
        for _ in range(n):
            tl = _STR.unpack_from(body, pos)[0]
            pos += _STR_LEN
            if pos + tl > end:
                return None
            topic = topic_name(bytes(body[pos : pos + tl]))
            pos += tl
            if end - pos >= _RUN_SIZE:  # read all fixed fields at once when the message is empty
                partition, error_code, ml, hw, ls, rl = _RUN.unpack_from(body, pos)
            else:
                partition, error_code, ml = _HEAD.unpack_from(body, pos)
            pos += _HEAD_SIZE
            if ml:
                if pos + ml > end:
                    return None
                message = bytes(body[pos : pos + ml]).decode()
                pos += ml
                hw, ls, rl = _TAIL.unpack_from(body, pos)
            else:
                message = ""
                if end - pos < _TAIL_SIZE:
                    return None  # truncated: the generic decoder raises
            pos += _TAIL_SIZE
            if rl >= 0:
                if pos + rl > end:
                    return None
                records: Any = body[pos : pos + rl]
                pos += rl
            elif rl == -1:
                records = None
            else:
                return None
            parts.append(M.FetchedPartition(topic, partition, error_code, message, hw, ls, records))
    except (struct.error, UnicodeDecodeError):
        return None
    return M.FetchResponse(parts) if pos == end else None


# --- the supervisor -------------------------------------------------------------------------------
def decode_fetch(body: bytes | memoryview) -> M.FetchRequest | None:
    """A version-0 FetchRequest of one partition, or None (more partitions, or malformed)."""
    mv = body if type(body) is memoryview else memoryview(body)
    n = len(mv)
    if n < _REQ.size + _STR_LEN:
        return None
    max_wait, min_bytes, max_bytes, count = _REQ.unpack_from(mv, 0)
    mid = _REQ.size + _STR_LEN + _STR.unpack_from(mv, _REQ.size)[0]
    if count != 1 or mid + _PART.size != n:
        return None
    try:
        topic = str(mv[_REQ.size + _STR_LEN : mid], "utf-8")
    except UnicodeDecodeError:
        return None
    partition, offset, part_max = _PART.unpack_from(mv, mid)
    return M.FetchRequest(max_wait, min_bytes, max_bytes, [M.FetchPartition(topic, partition, offset, part_max)])


def encode_fetched_one(correlation_id: int, topic: str, partition: int, high_watermark: int,
                       log_start_offset: int, records: bytes | bytearray | memoryview) -> bytes:
    """The response frame of a FetchResponse with one error-free partition holding `records`.
    Everything before the records is one pack of a Struct cached per topic (a parked or standing
    fetch answered from the batch just appended costs this once per append)."""
    head = _fetched_heads.get(topic)
    if head is None:
        ts = wire_str(topic)
        head = (struct.Struct(f"<{_HEAD_AND_COUNT.format[1:]}{len(ts)}s{_RUN.format[1:]}"),
                _RESPONSE_MIN + _COUNT.size + len(ts) + _RUN_SIZE, ts)
        if len(_fetched_heads) < _MAX_HEADS:
            _fetched_heads[topic] = head
    st, fixed, ts = head
    n = len(records)
    return b"".join((st.pack(fixed + n, correlation_id, 0, 1, ts, partition, 0, 0, high_watermark,
                             log_start_offset, n), records))


# topic -> (the Struct of a one-partition answer's bytes before its records, their length less
# the frame's length field, the topic's wire str); bounded, as a peer may name any topic.
_fetched_heads: dict[str, tuple[struct.Struct, int, bytes]] = {}
_MAX_HEADS = 4096


def encode_fetch(correlation_id: int, r: M.FetchResponse) -> bytes:
    """The response frame of a FetchResponse; struct.error, UnicodeEncodeError, TypeError, ...
    where the generic codec raises (the caller falls back to it for its error)."""
    parts = r.partitions
    if len(parts) == 1:
        p = parts[0]
        if p.error_code == 0 and p.error_message == "" and p.records is not None:
            return encode_fetched_one(correlation_id, p.topic, p.partition, p.high_watermark,
                                      p.log_start_offset, p.records)
    out: list[Any] = [b"", _COUNT.pack(len(parts))]
    size = _COUNT.size
    for p in parts:
        ts = wire_str(p.topic)
        msg = p.error_message.encode()
        records = p.records
        n = -1 if records is None else len(records)
        out.append(ts)
        out.append(_HEAD.pack(p.partition, p.error_code, len(msg)) + msg
                   + _TAIL.pack(p.high_watermark, p.log_start_offset, n))
        size += len(ts) + _RUN_SIZE + len(msg)
        if n > 0:
            out.append(records)
            size += n
    out[0] = F.RESPONSE_HEADER.pack(_RESPONSE_MIN + size, correlation_id, 0)
    return b"".join(out)
