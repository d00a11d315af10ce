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
from edgebus.protocol.codec import Message
from edgebus.protocol.messages import (
    REQUESTS,
    RESPONSES,
    VERSIONS,
    Api,
    ErrorBody,
    FetchPartition,
    FetchRequest,
    FetchResponse,
    ProduceRequest,
    ProduceResponse,
)

# The frame header after the length prefix (see edgebus.format REQUEST_HEADER / RESPONSE_HEADER).
_REQ_HEAD = struct.Struct("<HHI")
_RESP_HEAD = struct.Struct("<Ih")


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


class FrameBuffer:
    """Accumulates bytes and splits them into frames (length-prefixed)."""

    def __init__(self, header_size: int, max_frame: int = F.MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._min = header_size - 4  # bytes after the length field that every frame has
        self._max = max_frame

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

    def need(self) -> int:
        """Bytes still missing for the frame being received (0 if unknown or complete)."""
        avail = len(self._buf) - self._pos
        if avail < 4:
            return 0
        length = F.FRAME_LENGTH.unpack_from(self._buf, self._pos)[0]
        return max(0, 4 + length - avail)

    def next_frame(self) -> memoryview | None:
        """The next whole frame (without the length prefix), or None if incomplete."""
        avail = len(self._buf) - self._pos
        if avail < 4:
            return None
        length = F.FRAME_LENGTH.unpack_from(self._buf, self._pos)[0]
        if length > self._max:
            raise ProtocolError(f"frame of {length} bytes exceeds the limit of {self._max} bytes")
        if length < self._min:
            raise ProtocolError(f"frame of {length} bytes is shorter than its header")
        if avail < 4 + length:
            return None
        start = self._pos + 4
        self._pos = start + length
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
        api_key, api_version, corr = _REQ_HEAD.unpack_from(frame, 0)
        return RequestFrame(api_key, api_version, corr, frame[8:])

    @staticmethod
    def decode_body(req: RequestFrame) -> Message:
        """Decode a request body; ProtocolError for bad bytes, UnsupportedVersionError for an
        unknown API or version (the connection may stay open for those)."""
        cls = REQUESTS.get(req.api_key)
        if cls is None:
            raise UnsupportedVersionError(f"unknown API key {req.api_key}")
        lo, hi = VERSIONS[req.api_key]
        if not lo <= req.api_version <= hi:
            raise UnsupportedVersionError(
                f"API {req.api_key} version {req.api_version} not in supported range {lo}..{hi}"
            )
        if req.api_version == 0:  # the data plane's struct-level decoders know version 0 only
            if req.api_key == Api.PRODUCE:
                fields = decode_produce(req.body)
                if fields is not None:
                    return ProduceRequest(*fields)
            elif req.api_key == Api.FETCH:
                fetch = decode_fetch(req.body)
                if fetch is not None:
                    return fetch
        return cls.from_bytes(req.body)

    @staticmethod
    def encode_response(correlation_id: int, body: Message | None, error_code: int = 0,
                        error_message: str = "") -> bytes:
        if not error_code and body is not None:
            fast = _FAST_RESPONSES.get(type(body))
            if fast is not None:
                # Anything the struct-level encoder does not take (a value out of range, a string
                # that is not UTF-8) goes to the generic codec, which gives its own error.
                try:
                    return fast(correlation_id, body)
                except Exception:  # not contextlib.suppress: it costs a microsecond here
                    pass
        out: list[bytes] = []
        if error_code:
            ErrorBody.encode(ErrorBody(_fit_message(error_message)), out)
        elif body is not None:
            type(body).encode(body, out)
        payload = b"".join(out)
        return F.RESPONSE_HEADER.pack(6 + len(payload), correlation_id, error_code) + payload


# --- Struct-level codecs for the data plane (version 0 of PRODUCE and FETCH) ----------------------
# In the latency case (one record per PRODUCE, a FETCH parked for each append) the supervisor
# decodes a PRODUCE request and encodes a PRODUCE and a FETCH response per record; the generic
# dataclass codec costs microseconds for each. These functions give exactly the generic codec's
# bytes and values (docs/FORMAT.md 7.6) and decline anything unusual: a decoder returns None (the
# generic codec then decodes it, or raises its own ProtocolError), an encoder raises and
# ServerProtocol.encode_response falls back. tests/test_fastpath_codec.py compares both ways.

_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_PRODUCE_MID = struct.Struct("<ibi")  # partition, acks, batch length
_FETCH_HEAD = struct.Struct("<iiii")  # max_wait_ms, min_bytes, max_bytes, partition count
_FETCH_PART = struct.Struct("<iqi")  # partition, offset, max_bytes
# partition, error_code, error_message length, high_watermark, log_start_offset, records length
_FETCHED = struct.Struct("<ihHqqi")
_FETCHED_HEAD = struct.Struct("<ihH")  # the same fields split around a non-empty error message
_FETCHED_TAIL = struct.Struct("<qqi")
_PRODUCED = struct.Struct("<iqqq")  # partition, base_offset, append_time, log_start_offset
_HEAD_AND_COUNT = struct.Struct("<IIhi")  # response header, then an array's element count
# Encoded wire strs (u16 length + UTF-8) of topic names, bounded: fetches may name any string.
_WIRE_STRS: dict[str, bytes] = {}
_WIRE_STRS_MAX = 4096


def _wire_str(value: str) -> bytes:
    """A str field's bytes; UnicodeEncodeError or struct.error where the generic codec fails."""
    out = _WIRE_STRS.get(value)
    if out is None:
        raw = value.encode()
        out = _U16.pack(len(raw)) + raw
        if len(_WIRE_STRS) < _WIRE_STRS_MAX:
            _WIRE_STRS[value] = out
    return out


def decode_produce(body: bytes | memoryview) -> tuple[str, int, int, memoryview] | None:
    """(topic, partition, acks, batch) of a version-0 ProduceRequest body, the batch a slice of
    `body`; None for anything unusual (malformed, a null batch): use the generic codec then."""
    mv = body if type(body) is memoryview else memoryview(body)
    n = len(mv)
    if n < 2:
        return None
    mid = 2 + _U16.unpack_from(mv, 0)[0]
    start = mid + _PRODUCE_MID.size
    if start > n:
        return None
    partition, acks, length = _PRODUCE_MID.unpack_from(mv, mid)
    if length < 0 or start + length != n:
        return None
    try:
        topic = str(mv[2:mid], "utf-8")
    except UnicodeDecodeError:
        return None
    return topic, partition, acks, mv[start:]


def decode_fetch(body: bytes | memoryview) -> FetchRequest | None:
    """A version-0 FetchRequest of one partition, or None (more partitions, or malformed)."""
    mv = body if type(body) is memoryview else memoryview(body)
    n = len(mv)
    if n < _FETCH_HEAD.size + 2:
        return None
    max_wait, min_bytes, max_bytes, count = _FETCH_HEAD.unpack_from(mv, 0)
    mid = _FETCH_HEAD.size + 2 + _U16.unpack_from(mv, _FETCH_HEAD.size)[0]
    if count != 1 or mid + _FETCH_PART.size != n:
        return None
    try:
        topic = str(mv[_FETCH_HEAD.size + 2 : mid], "utf-8")
    except UnicodeDecodeError:
        return None
    partition, offset, part_max = _FETCH_PART.unpack_from(mv, mid)
    return FetchRequest(max_wait, min_bytes, max_bytes, [FetchPartition(topic, partition, offset, part_max)])


def encode_produce_response(correlation_id: int, topic: str, partition: int, base_offset: int,
                            append_time: int, log_start_offset: int) -> bytes:
    """The response frame of ProduceResponse(topic, partition, ...); struct.error or
    UnicodeEncodeError where the generic codec raises."""
    ts = _wire_str(topic)
    return b"".join((
        F.RESPONSE_HEADER.pack(6 + len(ts) + _PRODUCED.size, correlation_id, 0), ts,
        _PRODUCED.pack(partition, base_offset, append_time, log_start_offset)))


def encode_fetched_one(correlation_id: int, topic: str, partition: int, high_watermark: int,
                       log_start_offset: int, records: bytes | bytearray | memoryview) -> bytes:
    """The response frame of a FetchResponse with one error-free partition holding `records`."""
    ts = _wire_str(topic)
    n = len(records)
    return b"".join((
        _HEAD_AND_COUNT.pack(10 + len(ts) + _FETCHED.size + n, correlation_id, 0, 1), ts,
        _FETCHED.pack(partition, 0, 0, high_watermark, log_start_offset, n), records))


def _encode_produce(correlation_id: int, r: ProduceResponse) -> bytes:
    return encode_produce_response(correlation_id, r.topic, r.partition, r.base_offset,
                                   r.append_time, r.log_start_offset)


def _encode_fetch(correlation_id: int, r: FetchResponse) -> bytes:
    parts = r.partitions
    if len(parts) == 1:
        p = parts[0]
        if p.error_code == 0 and p.error_message == "" and p.records is not None:
            return encode_fetched_one(correlation_id, p.topic, p.partition, p.high_watermark,
                                      p.log_start_offset, p.records)
    out: list[Any] = [b"", _I32.pack(len(parts))]
    size = 4
    for p in parts:
        ts = _wire_str(p.topic)
        msg = p.error_message.encode()
        records = p.records
        n = -1 if records is None else len(records)
        out.append(ts)
        out.append(_FETCHED_HEAD.pack(p.partition, p.error_code, len(msg)) + msg
                   + _FETCHED_TAIL.pack(p.high_watermark, p.log_start_offset, n))
        size += len(ts) + _FETCHED.size + len(msg)
        if n > 0:
            out.append(records)
            size += n
    out[0] = F.RESPONSE_HEADER.pack(6 + size, correlation_id, 0)
    return b"".join(out)


_FAST_RESPONSES: dict[type, Any] = {ProduceResponse: _encode_produce, FetchResponse: _encode_fetch}


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
    def encode_request(api_key: int, correlation_id: int, body: Message, api_version: int = 0) -> bytes:
        out: list[bytes] = []
        type(body).encode(body, out)
        payload = b"".join(out)
        return F.REQUEST_HEADER.pack(8 + len(payload), api_key, api_version, correlation_id) + payload

    def receive_data(self, data: bytes | memoryview) -> None:
        self.frames.feed(data)

    def next_response(self) -> ResponseFrame | None:
        frame = self.frames.next_frame()
        if frame is None:
            return None
        corr, err = _RESP_HEAD.unpack_from(frame, 0)
        return ResponseFrame(corr, err, frame[6:])

    @staticmethod
    def decode_body(api_key: int, resp: ResponseFrame) -> Any:
        """The response body; raises the typed error when error_code is set."""
        if resp.error_code:
            msg = ErrorBody.from_bytes(resp.body).message
            raise error_for_code(resp.error_code, msg)
        return RESPONSES[api_key].from_bytes(resp.body)
