"""PRODUCE request bodies and responses at struct level, for the producer's hot path.

A one-record send() encodes a request and decodes an acknowledgement per record; through the
generic dataclass codec (edgebus/protocol/codec.py) that is ~2 us each way, as much as the rest of
the send. The bytes are exactly the generic codec's (docs/FORMAT.md, PRODUCE);
tests/test_produce_codec.py compares the two on many inputs.
"""

from __future__ import annotations

import struct
from typing import Any

from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol, ResponseFrame

_LEN = struct.Struct("<i")  # BYTES: i32 length
_U16 = struct.Struct("<H")  # STR: u16 length
_HEAD = struct.Struct("<ib")  # partition, acks
_RESP_TAIL = struct.Struct("<iqqq")  # partition, base_offset, append_time, log_start_offset
_prefixes: dict[tuple[str, int, int], bytes] = {}


class EncodedBody:
    """A request body encoded ahead of time. The framing calls `type(body).encode(body, out)`,
    so this stands in for the Message it encodes."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    @staticmethod
    def encode(body: EncodedBody, out: list[bytes]) -> None:
        out.append(body.payload)


def _prefix(topic: str, partition: int, acks: int) -> bytes:
    key = (topic, partition, acks)
    pre = _prefixes.get(key)
    if pre is None:
        tb = topic.encode()
        if len(tb) > 0xFFFF:
            raise ValueError("string longer than 65535 bytes")
        pre = _U16.pack(len(tb)) + tb + _HEAD.pack(partition, acks)
        if len(_prefixes) < 4096:  # bounded: a producer writing to ever new topics
            _prefixes[key] = pre
    return pre


def produce_body(topic: str, partition: int, acks: int, batch: bytes) -> EncodedBody:
    """The body of ProduceRequest(topic, partition, acks, batch), encoded."""
    return EncodedBody(_prefix(topic, partition, acks) + _LEN.pack(len(batch)) + batch)


def produce_result(frame: ResponseFrame) -> tuple[int, int]:
    """(base_offset, append_time) of a PRODUCE response; raises the typed error it carries."""
    body = frame.body
    if not frame.error_code and len(body) >= 2:
        n = _U16.unpack_from(body, 0)[0]
        if len(body) == 2 + n + _RESP_TAIL.size:
            _p, base, ts, _ls = _RESP_TAIL.unpack_from(body, 2 + n)
            return base, ts
    r: Any = ClientProtocol.decode_body(M.Api.PRODUCE, frame)  # errors, or anything unusual
    return r.base_offset, r.append_time
