"""PRODUCE (version 0) at struct level: the producer's request body and acknowledgement, the
supervisor's request decoder and response encoder.

A one-record send() encodes a request and decodes an acknowledgement per record, and the
supervisor decodes the request and encodes the answer; through the generic dataclass codec that
is one to three microseconds each. The bytes and values are exactly the generic codec's
(docs/FORMAT.md, PRODUCE); tests/test_produce_codec.py and tests/test_fastpath_codec.py compare
the two on many inputs.
"""

from __future__ import annotations

import struct
from typing import ClassVar

from edgebus import format as F
from edgebus.fastpath.strings import wire_str
from edgebus.protocol.codec import EncodedRequest
from edgebus.protocol.framing import ClientProtocol, ResponseFrame
from edgebus.protocol.messages import Api, ProduceResponse

_PRODUCE = int(Api.PRODUCE)
_RUN = F.PRODUCE_REQUEST_RUN  # partition, acks, batch length
_ACK = F.PRODUCE_RESPONSE_RUN  # partition, base_offset, append_time, log_start_offset
_STR_LEN = F.STR_LENGTH.size
_HEAD_BYTES = F.RESPONSE_MIN_LENGTH + _ACK.size  # a response's length field, less the topic
_prefixes: dict[tuple[str, int, int], bytes] = {}
_MAX_PREFIXES = 4096  # bounded: a producer writing to ever new topics
# topic -> (the Struct of a whole acknowledgement frame, its length field, the topic's wire str)
_acks: dict[str, tuple[struct.Struct, int, bytes]] = {}

# (topic, partition, acks, batch): a ProduceRequest's fields, the batch a writable slice of the
# request frame (the supervisor stamps it in place).
ProduceFields = tuple[str, int, int, memoryview]


# --- the producer ---------------------------------------------------------------------------------
class ProduceBody(EncodedRequest):
    """The body of a ProduceRequest, encoded by `produce_body` or `produce_body_parts`: kept as
    pieces that `frame` joins once, behind the frame header. A batch of large records is
    copied once on its way to the socket or ring, not once per layer (each transient copy of a
    256 KiB batch also pays its page faults when the heap gives memory back between batches)."""

    __slots__ = ("_parts", "_size")
    api_key: ClassVar[int] = _PRODUCE

    def __init__(self, parts: list[bytes], size: int) -> None:
        self._parts = parts  # parts[0] is left free for the frame header
        self._size = size  # bytes of the body

    @property
    def payload(self) -> bytes:
        """The body's bytes."""
        return b"".join(self._parts[1:])

    def frame(self, correlation_id: int) -> bytes:
        parts = self._parts
        parts[0] = F.REQUEST_HEADER.pack(F.REQUEST_MIN_LENGTH + self._size, _PRODUCE, 0, correlation_id)
        return b"".join(parts)


def _prefix(topic: str, partition: int, acks: int) -> bytes:
    """The body's bytes before the batch but its length (cached per topic, partition, acks)."""
    key = (topic, partition, acks)
    pre = _prefixes.get(key)
    if pre is None:
        tb = topic.encode()
        if len(tb) > 0xFFFF:
            raise ValueError("string longer than 65535 bytes")  # the generic codec's error
        pre = F.STR_LENGTH.pack(len(tb)) + tb + _RUN.pack(partition, acks, 0)[: -F.BYTES_LENGTH.size]
        if len(_prefixes) < _MAX_PREFIXES:
            _prefixes[key] = pre
    return pre


def produce_body(topic: str, partition: int, acks: int, batch: bytes) -> ProduceBody:
    """The body of ProduceRequest(topic, partition, acks, batch), encoded."""
    return produce_body_parts(topic, partition, acks, [batch], len(batch))


def produce_body_parts(topic: str, partition: int, acks: int, batch: list[bytes],
                       batch_size: int) -> ProduceBody:
    """produce_body of the batch whose bytes are the pieces `batch` (edgebus.batch.batch_parts),
    `batch_size` bytes in all, without joining them here."""
    pre = _prefix(topic, partition, acks) + F.BYTES_LENGTH.pack(batch_size)
    return ProduceBody([b"", pre, *batch], len(pre) + batch_size)


def produce_result(frame: ResponseFrame) -> tuple[int, int]:
    """(base_offset, append_time) of a PRODUCE response; raises the typed error it carries."""
    body = frame.body
    if not frame.error_code and len(body) >= _STR_LEN:
        n = F.STR_LENGTH.unpack_from(body, 0)[0]
        if len(body) == _STR_LEN + n + _ACK.size:
            _p, base, ts, _ls = _ACK.unpack_from(body, _STR_LEN + n)
            return base, ts
    r: ProduceResponse = ClientProtocol.decode_body(_PRODUCE, frame)  # errors, or anything unusual
    return r.base_offset, r.append_time


# --- the supervisor -------------------------------------------------------------------------------
def decode_produce(body: bytes | memoryview) -> ProduceFields | None:
    """The fields of a version-0 ProduceRequest body; None for anything unusual (malformed, a
    null batch): the generic codec decodes those, or raises its ProtocolError."""
    mv = body if type(body) is memoryview else memoryview(body)
    n = len(mv)
    if n < _STR_LEN:
        return None
    mid = _STR_LEN + F.STR_LENGTH.unpack_from(mv, 0)[0]
    start = mid + _RUN.size
    if start > n:
        return None
    partition, acks, length = _RUN.unpack_from(mv, mid)
    if length < 0 or start + length != n:
        return None
    try:
        topic = str(mv[_STR_LEN:mid], "utf-8")
    except UnicodeDecodeError:
        return None
    return topic, partition, acks, mv[start:]


def encode_produce_response(correlation_id: int, topic: str, partition: int, base_offset: int,
                            append_time: int, log_start_offset: int) -> bytes:
    """The response frame of ProduceResponse(topic, partition, ...); struct.error or
    UnicodeEncodeError where the generic codec raises. One pack per answer: the frame's layout
    (header, the topic's wire str, the acknowledgement's run) is one Struct per topic, cached."""
    ack = _acks.get(topic)
    if ack is None:
        ts = wire_str(topic)
        ack = (struct.Struct(f"<{F.RESPONSE_HEADER.format[1:]}{len(ts)}s{_ACK.format[1:]}"),
               _HEAD_BYTES + len(ts), ts)
        if len(_acks) < _MAX_PREFIXES:
            _acks[topic] = ack
    st, n, ts = ack
    return st.pack(n, correlation_id, 0, ts, partition, base_offset, append_time, log_start_offset)


def encode_produce(correlation_id: int, r: ProduceResponse) -> bytes:
    """encode_produce_response of a ProduceResponse."""
    return encode_produce_response(correlation_id, r.topic, r.partition, r.base_offset,
                                   r.append_time, r.log_start_offset)
