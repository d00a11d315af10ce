"""LazySocketChannel's one-walk settling of the acknowledgements a read brought
(edgebus/client/fast_acks.py `deliver`, whole=False): whatever the read's cut, the frames it
settles plus what the FrameBuffer makes of the rest are the stream's frames, in order, each
once; a frame it will not judge (too large, too short) is left to the FrameBuffer, whose checks
raise. Sans-IO: bytes in, callbacks called (a Dispatcher's pending table and lock, no socket)."""

from __future__ import annotations

import threading

import pytest

from edgebus import format as F
from edgebus.client.fast_acks import deliver
from edgebus.errors import ProtocolError
from edgebus.protocol.framing import ClientProtocol, whole_responses


def _frame(corr: int, err: int, body: bytes) -> bytes:
    return F.RESPONSE_HEADER.pack(F.RESPONSE_MIN_LENGTH + len(body), corr, err) + body


class _Pending:
    """A Dispatcher's table of requests in flight (corr -> callback) and its lock."""

    def __init__(self, corrs: list[int], out: list[tuple[int, int, bytes]]) -> None:
        self._lock = threading.Lock()
        self._pending = {c: self._callback for c in corrs}
        self.out = out

    def _callback(self, frame, err) -> None:  # type: ignore[no-untyped-def]
        assert err is None
        self.out.append((frame.correlation_id, frame.error_code, bytes(frame.body)))


def _split(data: bytes, cut: int, corrs: list[int]) -> list[tuple[int, int, bytes]]:
    """Two reads, data[:cut] then the rest, taken as LazySocketChannel._take does."""
    proto = ClientProtocol()
    out: list[tuple[int, int, bytes]] = []
    ch = _Pending(corrs, out)
    for part in (data[:cut], data[cut:]):
        if not proto.frames.buffered():
            end = deliver(ch, part, False)[1]  # type: ignore[arg-type]
            if end < len(part):
                proto.receive_data(memoryview(part)[end:])
        else:
            proto.receive_data(part)
        while (f := proto.next_response()) is not None:
            out.append((f.correlation_id, f.error_code, bytes(f.body)))
    return out


def test_every_cut_gives_every_frame_once_in_order() -> None:
    want = [(1, 0, b"\x00\x01t" + bytes(28)), (2, 0, b""), (3, 7, b"\x00\x03err"),
            (4, 0, b"x" * 70_000)]  # the last larger than the one-call split takes
    data = b"".join(_frame(*w) for w in want)
    for cut in [*range(0, 60), *range(len(data) - 40, len(data) + 1)]:
        assert _split(data, cut, [w[0] for w in want]) == want, f"cut at {cut}"


def test_a_frame_shorter_than_its_header_is_left_to_the_frame_buffer() -> None:
    bad = F.RESPONSE_HEADER.pack(2, 9, 0)  # a length below the header's 6 bytes
    out: list[tuple[int, int, bytes]] = []
    taken, end = deliver(_Pending([1, 9], out), _frame(1, 0, b"ok") + bad, False)  # type: ignore[arg-type]
    assert out == [(1, 0, b"ok")] and (taken, end) == (1, len(_frame(1, 0, b"ok")))
    proto = ClientProtocol()
    proto.receive_data(bad)
    with pytest.raises(ProtocolError):
        proto.next_response()


def test_a_consumers_read_split_by_whole_responses_gives_every_frame_once_in_order() -> None:
    """SyncChannel._frames (a consumer's socket): a read with nothing buffered before it is split
    by whole_responses in one call, the rest (a frame's start, a large frame) fed to the
    FrameBuffer; whatever the cut, the stream's frames come out in order, each once."""
    want = [(1, 0, b"\x00\x01t" + bytes(28)), (2, 0, b""), (3, 7, b"\x00\x03err"),
            (4, 0, b"x" * 70_000)]
    data = b"".join(_frame(*w) for w in want)
    for cut in [*range(0, 60), *range(len(data) - 40, len(data) + 1)]:
        proto = ClientProtocol()
        out = []
        for part in (data[:cut], data[cut:]):
            if not part:
                continue
            if proto.frames.buffered():
                proto.receive_data(part)
            else:
                frames, end = whole_responses(part)
                out += [(f.correlation_id, f.error_code, bytes(f.body)) for f in frames]
                if end < len(part):
                    proto.receive_data(memoryview(part)[end:])
            while (f := proto.next_response()) is not None:
                out.append((f.correlation_id, f.error_code, bytes(f.body)))
        assert out == want, f"cut at {cut}"
