"""FETCH request bodies and responses at struct level, for the consumer's hot path.

A consumer sends one FETCH per poll and reads one response. Through the generic dataclass codec
(edgebus/protocol/codec.py) that costs ~10 us a poll, more than everything else when a poll
brings one record: a FetchRequest and a FetchPartition per partition made and encoded (twice
with fetch-ahead, which also compares requests by their bytes), and the response decoded field by
field. Here a `FetchPlan` encodes the body once per assignment and limits; a poll packs its
offsets and max_wait_ms into it with one precompiled Struct. `fetch_response` reads a response
with a few struct calls and hands anything unusual (truncated, a bad length, trailing bytes) to
the generic decoder, so errors are the generic codec's. The bytes and results are exactly those
of edgebus.protocol.messages (docs/FORMAT.md, FETCH); tests/shm/test_consumer_fast.py compares
the two on many inputs.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from edgebus import format as F
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol, ResponseFrame

_I32 = struct.Struct("<i")  # array count, BYTES length
_U16 = struct.Struct("<H")  # STR length
_MID = struct.Struct("<ihH")  # FetchedPartition: partition, error_code, error_message length
_TAIL = struct.Struct("<qqi")  # FetchedPartition: high_watermark, log_start_offset, records length
_NO_MESSAGE = struct.Struct("<ihHqqi")  # _MID then _TAIL: the fields when error_message is empty
_topics: dict[bytes, str] = {}  # topic names as received -> str (bounded below)
_MAX_TOPICS = 4096
_FETCH = int(M.Api.FETCH)


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
        head = M.FetchRequest(0, min_bytes, max_bytes, []).to_bytes()[4:-4]
        parts = [M.FetchPartition(t, p, 0, mb).to_bytes() for (t, p), mb in zip(self.keys, pmax, strict=True)]
        fmt = ["<i"]
        consts: list[bytes] = []
        fixed = head + _I32.pack(len(parts))
        for enc in parts:
            fixed += enc[:-12]
            fmt += [f"{len(fixed)}s", "q"]
            consts.append(fixed)
            fixed = enc[-4:]
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
        self._pack = pack

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


class FetchBody:
    """An encoded FetchRequest body. The framing calls `type(body).encode(body, out)`, so this
    stands in for the Message it encodes; `key` is the body without max_wait_ms (fetch-ahead
    matches requests by it)."""

    __slots__ = ("data", "max_wait_ms", "offsets", "plan")

    def __init__(self, plan: FetchPlan, max_wait_ms: int, offsets: tuple[int, ...], data: bytes) -> None:
        self.plan = plan
        self.max_wait_ms = max_wait_ms
        self.offsets = offsets
        self.data = data

    @staticmethod
    def encode(body: FetchBody, out: list[bytes]) -> None:
        out.append(body.data)

    def frame(self, correlation_id: int) -> bytes:
        """The whole request frame: ClientProtocol.encode_request(FETCH, correlation_id, self)."""
        data = self.data
        return F.REQUEST_HEADER.pack(8 + len(data), _FETCH, 0, correlation_id) + data

    @property
    def key(self) -> bytes:
        return self.data[4:]

    def with_offsets(self, offsets: Sequence[int], max_wait_ms: int) -> FetchBody:
        return self.plan.body(max_wait_ms, offsets)

    def request(self) -> M.FetchRequest:
        """The FetchRequest this body encodes (for tests and logs)."""
        return M.FetchRequest.from_bytes(self.data)


def fetch_body(body: FetchBody | M.FetchRequest) -> FetchBody:
    return body if isinstance(body, FetchBody) else FetchPlan.of(body)


def fetch_response(frame: ResponseFrame) -> M.FetchResponse:
    """The FetchResponse in a FETCH response frame; raises the typed error it carries, and the
    generic codec's ProtocolError for a malformed body."""
    if not frame.error_code:
        resp = _decode(frame.body)
        if resp is not None:
            return resp
    return ClientProtocol.decode_body(M.Api.FETCH, frame)  # type: ignore[no-any-return]


def _decode(body: memoryview) -> M.FetchResponse | None:
    """The response, or None for anything the generic decoder must look at (it raises)."""
    end = len(body)
    try:
        n = _I32.unpack_from(body, 0)[0]
        if n < 0 or n > end - 4:
            return None
        pos = 4
        parts = []
        for _ in range(n):
            tl = _U16.unpack_from(body, pos)[0]
            pos += 2
            if pos + tl > end:
                return None
            tb = bytes(body[pos : pos + tl])
            topic = _topics.get(tb)
            if topic is None:
                topic = tb.decode()
                if len(_topics) < _MAX_TOPICS:
                    _topics[tb] = topic
            pos += tl
            if end - pos >= 28:  # _NO_MESSAGE.size: read all fixed fields at once when it is empty
                partition, error_code, ml, hw, ls, rl = _NO_MESSAGE.unpack_from(body, pos)
            else:
                partition, error_code, ml = _MID.unpack_from(body, pos)
            pos += 8
            if ml:
                if pos + ml > end:
                    return None
                message = bytes(body[pos : pos + ml]).decode()
                pos += ml
                hw, ls, rl = _TAIL.unpack_from(body, pos)
            else:
                message = ""
                if end - pos < 20:
                    return None  # truncated: the generic decoder raises
            pos += 20
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
