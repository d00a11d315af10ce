"""LazySocketChannel's one-call split of the acknowledgements a read brought (whole_responses):
whatever the read's cut, the frames it gives plus what the FrameBuffer makes of the rest are the
stream's frames, in order, each once; a frame it will not judge (too large, too short) is left
to the FrameBuffer, whose checks raise. Sans-IO: bytes in, frames out."""

from __future__ import annotations

import pytest

from edgebus import format as F
from edgebus.client.socket_acks import whole_responses
from edgebus.errors import ProtocolError
from edgebus.protocol.framing import ClientProtocol


def _frame(corr: int, err: int, body: bytes) -> bytes:
    return F.RESPONSE_HEADER.pack(F.RESPONSE_MIN_LENGTH + len(body), corr, err) + body


def _split(data: bytes, cut: int) -> list[tuple[int, int, bytes]]:
    """Two reads, data[:cut] then the rest, taken as LazySocketChannel._take does."""
    proto = ClientProtocol()
    out = []
    for part in (data[:cut], data[cut:]):
        if not proto.frames.buffered():
            frames, end = whole_responses(part)
            out += [(f.correlation_id, f.error_code, bytes(f.body)) for f in frames]
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
        assert _split(data, cut) == want, f"cut at {cut}"


def test_a_frame_shorter_than_its_header_is_left_to_the_frame_buffer() -> None:
    bad = F.RESPONSE_HEADER.pack(2, 9, 0)  # a length below the header's 6 bytes
    frames, end = whole_responses(_frame(1, 0, b"ok") + bad)
    assert [f.correlation_id for f in frames] == [1] and end == len(_frame(1, 0, b"ok"))
    proto = ClientProtocol()
    proto.receive_data(bad)
    with pytest.raises(ProtocolError):
        proto.next_response()
