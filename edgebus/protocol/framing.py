"""Sans-IO framing: feed bytes in, get whole requests or responses out. No sockets here.

Rule: any bytes fed in either give valid events or raise ProtocolError, and never buffer more
than one frame of at most max_frame bytes plus one read's worth.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from edgebus import format as F
from edgebus.errors import ProtocolError, UnsupportedVersionError, error_for_code
from edgebus.protocol.codec import EncodedRequest, Message
from edgebus.protocol.messages import ErrorBody
from edgebus.protocol.registry import BODIES, REQUESTS, RESPONSES, VERSIONS, version_of

_LEN = F.FRAME_LENGTH_SIZE


@dataclass(slots=True)
class RequestFrame:
    api_key: int
    api_version: int
    correlation_id: int
    body: memoryview


@dataclass(slots=True)
class ResponseFrame:
    correlation_id: int
    error_code: int
    body: memoryview


_HEAD = F.RESPONSE_HEADER_SIZE  # length, correlation id, error code (docs/FORMAT.md 7.2)
# whole_responses leaves larger frames to the FrameBuffer (its limit checks, its hand-over).
WHOLE_SMALL = 64 * 1024


def whole_responses(data: bytes | bytearray) -> tuple[list[ResponseFrame], int]:
    """The small whole response frames at the start of data (one read's bytes, nothing buffered
    before them), and where the rest (the start of a frame, or a large one) begins; the rest
    goes to the FrameBuffer, which checks its length. One call instead of the FrameBuffer's two
    per frame (next_response, next_frame) and its feed."""
    out: list[ResponseFrame] = []
    mv = memoryview(data)
    pos, end = 0, len(data)
    unpack = F.RESPONSE_HEADER.unpack_from
    while end - pos >= _HEAD:
        n, corr, err = unpack(data, pos)
        if n > WHOLE_SMALL or n < _HEAD - _LEN or end - pos < _LEN + n:
            break
        out.append(ResponseFrame(corr, err, mv[pos + _HEAD : pos + _LEN + n]))
        pos += _LEN + n
    return out, pos


# A frame at least this large that fills the buffer is handed over rather than copied (below it,
# a copy is cheaper than a new buffer's growth from empty).
_HANDOVER_BYTES = 64 * 1024


class FrameBuffer:
    """Accumulates bytes and splits them into frames (length-prefixed). The native socket's
    frames by default; Kafka's (big-endian length, edgebus/server/kafka/framing.py) with
    `length` and `what` set."""

    def __init__(self, header_size: int, max_frame: int = F.MAX_FRAME_BYTES, *,
                 length: struct.Struct = F.FRAME_LENGTH, what: str = "frame") -> None:
        self._buf = bytearray()
        self._pos = 0
        self._min = header_size - _LEN  # bytes after the length field that every frame has
        self._max = max_frame
        self._length = length
        self._what = what  # names the frame in errors

    def feed(self, data: bytes | memoryview) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > 65536:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def take(self) -> bytearray:
        """The bytes buffered (the start of a frame), leaving the buffer empty: a caller that
        then reads the rest of a large frame into a buffer of its own hands it back with
        adopt(), so that a multi-MiB frame is not copied from read to read."""
        data = self._buf if self._pos == 0 else self._buf[self._pos :]
        self._buf, self._pos = bytearray(), 0
        return data

    def adopt(self, buf: bytearray) -> None:
        """Take `buf` (the caller's no more) as the buffer: its bytes are the stream's next ones.
        Only when nothing is buffered (after take())."""
        if self._pos != len(self._buf):
            raise ValueError("adopt() needs an empty buffer")
        self._buf, self._pos = buf, 0

    def limit(self, max_frame: int) -> None:
        """Change the largest frame accepted (a connection not yet authenticated gets a small
        one, so it cannot make the supervisor buffer a large frame for nobody)."""
        self._max = max_frame

    def need(self) -> int:
        """Bytes still missing for the frame being received (0 if unknown or complete)."""
        avail = len(self._buf) - self._pos
        if avail < _LEN:
            return 0
        length: int = self._length.unpack_from(self._buf, self._pos)[0]
        return max(0, _LEN + length - avail)

    def next_frame(self) -> memoryview | None:
        """The next whole frame (without the length prefix), or None if incomplete."""
        avail = len(self._buf) - self._pos
        if avail < _LEN:
            return None
        length = self._length.unpack_from(self._buf, self._pos)[0]
        if length > self._max:
            raise ProtocolError(f"{self._what} of {length} bytes exceeds the limit of {self._max} bytes")
        if length < self._min:
            raise ProtocolError(f"{self._what} of {length} bytes is shorter than its header")
        if avail < _LEN + length:
            return None
        start = self._pos + _LEN
        self._pos = start + length
        if self._pos == len(self._buf) and length >= _HANDOVER_BYTES:
            # The frame is all that is buffered (a large answer usually is): hand the buffer
            # itself over and start a new one, instead of copying megabytes.
            buf, self._buf, self._pos = self._buf, bytearray(), 0
            return memoryview(buf)[start:]
        # A writable copy: the caller may keep it while the buffer is reused, and the supervisor
        # stamps a produced batch's header in place without another copy.
        return memoryview(self._buf[start : self._pos])


class ServerProtocol:
    """The supervisor's side of one connection."""

    def __init__(self, max_frame: int = F.MAX_FRAME_BYTES) -> None:
        self.frames = FrameBuffer(F.REQUEST_HEADER_SIZE, max_frame)

    def receive_data(self, data: bytes | memoryview) -> None:
        self.frames.feed(data)

    def next_request(self) -> RequestFrame | None:
        frame = self.frames.next_frame()
        if frame is None:
            return None
        api_key, api_version, corr = F.REQUEST_HEADER_REST.unpack_from(frame, 0)
        return RequestFrame(api_key, api_version, corr, frame[F.REQUEST_MIN_LENGTH :])

    @staticmethod
    def decode_body(req: RequestFrame) -> Message:
        """Decode a request body with the generic codec; ProtocolError for bad bytes,
        UnsupportedVersionError for an unknown API or version (the connection may stay open for
        those). The supervisor's entry point, with the struct-level decoders in front, is
        edgebus.fastpath.supervisor.decode_request."""
        cls = REQUESTS.get(req.api_key)
        if cls is None:
            raise UnsupportedVersionError(f"unknown API key {req.api_key}")
        lo, hi = VERSIONS[req.api_key]
        if not lo <= req.api_version <= hi:
            raise UnsupportedVersionError(
                f"API {req.api_key} version {req.api_version} not in supported range {lo}..{hi}"
            )
        if req.api_version:
            cls = BODIES[(req.api_key, req.api_version)][0]  # the version's own body
        body: Message = cls.from_bytes(req.body)
        return body

    @staticmethod
    def encode_response(correlation_id: int, body: Message | None, error_code: int = 0,
                        error_message: str = "") -> bytes:
        """A response frame by the generic codec (edgebus.fastpath.supervisor.encode_response
        puts the struct-level PRODUCE/FETCH encoders in front)."""
        out: list[bytes] = []
        if error_code:
            ErrorBody.encode(ErrorBody(_fit_message(error_message)), out)
        elif body is not None:
            type(body).encode(body, out)
        # One join with the header: a 4 MiB fetch answer is copied once, not twice.
        n = sum(map(len, out))
        return b"".join([F.RESPONSE_HEADER.pack(F.RESPONSE_MIN_LENGTH + n, correlation_id, error_code),
                         *out])


# An error message travels as a wire str (u16 length). Messages may quote a client's input (a
# topic name, a config value's repr), so a longer one is cut rather than failing the response.
MAX_ERROR_MESSAGE = 0xFFFF


def _fit_message(message: str) -> str:
    """message as valid UTF-8 of at most MAX_ERROR_MESSAGE bytes, cut on a character boundary."""
    data = message.encode("utf-8", "replace")  # "replace": OS text may hold lone surrogates
    if len(data) > MAX_ERROR_MESSAGE:
        return data[: MAX_ERROR_MESSAGE - 3].decode("utf-8", "ignore") + "..."
    return data.decode("utf-8")


class ClientProtocol:
    """A client's side of one connection."""

    def __init__(self, max_frame: int = F.MAX_FRAME_BYTES + 1024 * 1024) -> None:
        self.frames = FrameBuffer(F.RESPONSE_HEADER_SIZE, max_frame)

    @staticmethod
    def encode_request(api_key: int, correlation_id: int, body: Message | EncodedRequest,
                       api_version: int = 0) -> bytes:
        """A request frame; a body the fast path encoded (EncodedRequest) frames itself."""
        if isinstance(body, EncodedRequest):
            return body.frame(correlation_id)
        out: list[bytes] = []
        type(body).encode(body, out)
        n = sum(map(len, out))  # one join with the header: a large request is copied once
        api_version = api_version or version_of(body)  # a later version's body asks for it
        return b"".join([F.REQUEST_HEADER.pack(F.REQUEST_MIN_LENGTH + n, api_key, api_version,
                                               correlation_id), *out])

    def receive_data(self, data: bytes | memoryview) -> None:
        self.frames.feed(data)

    def next_response(self) -> ResponseFrame | None:
        frame = self.frames.next_frame()
        if frame is None:
            return None
        corr, err = F.RESPONSE_HEADER_REST.unpack_from(frame, 0)
        return ResponseFrame(corr, err, frame[F.RESPONSE_MIN_LENGTH :])

    @staticmethod
    def decode_body(api_key: int, resp: ResponseFrame, version: int = 0) -> Any:
        """The response body (of the request's `version`); raises the typed error when
        error_code is set."""
        if resp.error_code:
            msg: str = ErrorBody.from_bytes(resp.body).message
            raise error_for_code(resp.error_code, msg)
        if version:
            return BODIES[(api_key, version)][1].from_bytes(resp.body)
        return RESPONSES[api_key].from_bytes(resp.body)
