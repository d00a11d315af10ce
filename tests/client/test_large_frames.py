"""A large answer's rest is read straight into a buffer of the frame's size (SyncChannel's
recv_into path, FrameBuffer.take/adopt): the frames come out byte for byte whatever the pieces
the socket delivers, the bytes after a frame stay for the next one, and a deadline in the middle
of a frame keeps what came so that the stream stays in step. A real socket pair, a real peer
writing in pieces from a thread."""

from __future__ import annotations

import os
import socket
import threading
import time

from edgebus import format as F
from edgebus.client.channel import DIRECT_RECV_BYTES, SyncChannel
from edgebus.protocol.framing import ClientProtocol, FrameBuffer


def response(corr: int, body: bytes) -> bytes:
    return F.RESPONSE_HEADER.pack(F.RESPONSE_MIN_LENGTH + len(body), corr, 0) + body


def channel(sock: socket.socket) -> SyncChannel:
    ch = SyncChannel("unused.sock", timeout=5.0)
    ch._sock = sock
    ch._proto = ClientProtocol()
    return ch


def write_in_pieces(sock: socket.socket, data: bytes, piece: int, pause: float = 0.0) -> None:
    for i in range(0, len(data), piece):
        sock.sendall(data[i:i + piece])
        if pause:
            time.sleep(pause)


def test_large_frames_come_out_whole_and_in_order() -> None:
    a, b = socket.socketpair()
    bodies = [os.urandom(3 * DIRECT_RECV_BYTES + 17), b"small", os.urandom(5 << 20), b"x" * 100]
    stream = b"".join(response(i + 1, body) for i, body in enumerate(bodies))
    writer = threading.Thread(target=write_in_pieces, args=(b, stream, 100_003), daemon=True)
    writer.start()
    ch = channel(a)
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + 30
    while len(got) < len(bodies):
        frames = ch._frames(deadline)
        assert frames, "timed out"
        got += [(f.correlation_id, bytes(f.body)) for f in frames]
    writer.join()
    assert got == [(i + 1, body) for i, body in enumerate(bodies)]
    a.close()
    b.close()


def test_a_deadline_inside_a_large_frame_keeps_what_came() -> None:
    a, b = socket.socketpair()
    body = os.urandom(4 << 20)
    frame = response(7, body)
    half = len(frame) // 2
    go_on = threading.Event()

    def write() -> None:
        b.sendall(frame[:half])
        go_on.wait(30)
        b.sendall(frame[half:] + response(8, b"next"))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    ch = channel(a)
    assert ch._frames(time.monotonic() + 0.5) == []  # the rest has not come: the deadline
    go_on.set()
    frames: list = []
    deadline = time.monotonic() + 10
    while len(frames) < 2:
        got = ch._frames(deadline)
        assert got, "timed out"
        frames += got
    assert [(f.correlation_id, bytes(f.body)) for f in frames] == [(7, body), (8, b"next")]
    writer.join()
    a.close()
    b.close()


def test_take_and_adopt_hand_the_buffer_over() -> None:
    fb = FrameBuffer(F.RESPONSE_HEADER_SIZE)
    frame = response(3, b"y" * 1000)
    fb.feed(frame[:10])
    head = fb.take()
    assert bytes(head) == frame[:10] and fb.buffered() == 0
    whole = bytearray(head) + frame[10:]
    fb.adopt(whole)
    got = fb.next_frame()
    assert got is not None and bytes(got) == frame[F.FRAME_LENGTH_SIZE:]
    fb.feed(b"\x01")
    try:
        fb.adopt(bytearray(b"z"))
    except ValueError:
        pass
    else:
        raise AssertionError("adopt() over buffered bytes must refuse")
