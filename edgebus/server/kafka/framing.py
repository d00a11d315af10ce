"""Kafka's framing, sans-IO: a 4-byte big-endian length, then a request (header and body).

Rule (the protocol fuzz rule of edgebus/protocol/framing.py): any bytes fed in either give whole
frames or raise ProtocolError, and never buffer more than one frame of at most `max_frame` bytes
plus one read's worth. A frame's header is parsed by codec.decode_header.
"""

from __future__ import annotations

import struct

from edgebus import format as F
from edgebus.protocol.framing import FrameBuffer, RequestFrame

_LEN = struct.Struct(">i")
# api_key, api_version, correlation_id: the first 8 bytes of every request header (v0, v1, v2).
_HEADER_START = struct.Struct(">hhi")
# A Kafka request carries at most one produce batch of MAX_BATCH_BYTES (after decompression it
# is checked again) plus its envelope: the same bound as the native socket's frames.
MAX_KAFKA_FRAME = F.MAX_FRAME_BYTES
# Before SASL authentication a connection may send only small frames (a handshake, a token).
PREAUTH_MAX_FRAME = 64 * 1024


class KafkaProtocol:
    """The supervisor's side of one Kafka connection: `receive_data`, `next_request`. The
    RequestFrame's body is the whole frame, header included (its length depends on the header
    version, which depends on the API and version: codec.decode_header)."""

    def __init__(self, max_frame: int = MAX_KAFKA_FRAME) -> None:
        # The native FrameBuffer with Kafka's big-endian signed length (a negative one is
        # refused as shorter than a request header).
        self.frames = FrameBuffer(_LEN.size + _HEADER_START.size, max_frame, length=_LEN,
                                  what="Kafka frame")

    def receive_data(self, data: bytes | memoryview) -> None:
        self.frames.feed(data)

    def next_request(self) -> RequestFrame | None:
        frame = self.frames.next_frame()
        if frame is None:
            return None
        api_key, api_version, corr = _HEADER_START.unpack_from(frame, 0)
        return RequestFrame(api_key, api_version, corr, frame)


def frame(payload: bytes) -> bytes:
    """`payload` with its length prefix."""
    return _LEN.pack(len(payload)) + payload
