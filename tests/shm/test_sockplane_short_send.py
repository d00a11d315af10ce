"""sockplane.c's answer to a socket consumer's standing fetch when the socket takes only part of
it: the C call itself (edgebus.shm._plane) on a real file and real socket pairs, the consumer's
with the smallest send buffer the kernel allows, so that an answer of ~7 KiB goes out short.
(A supervisor's consumer socket never has so small a buffer, so no end-to-end test reaches this;
listeners/sock_plane.py queue_rest then queues the rest.) The bytes the consumer gets plus the
rest left in the call's rest buffer must be exactly encode_fetched_one's answer, and the call
must say so (rest_len, w_rest_at/len) and answer nothing more to that socket."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from edgebus.fastpath.fetch import encode_fetched_one
from edgebus.server.listeners import shm_plane
from tests.shm.test_c_plane import batch, produce_frame

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(not shm_plane.available(), reason="the C data plane is not built")]


def test_a_standing_answer_the_socket_takes_only_part_of_leaves_its_rest(tmp_path: Path) -> None:
    assert shm_plane.load()  # (the supervisor loads it at its first shm attach or socket grant)
    ffi, lib = shm_plane._ffi, shm_plane._lib
    seg = tmp_path / "00000000000000000000.log"
    seg.write_bytes(b"\0" * 100)  # a segment already holding something (no first index entry due)
    fd = os.open(seg, os.O_WRONLY | os.O_APPEND)
    cons_sv, cons_client = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    prod_sv, prod_client = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    cons_sv.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)  # the kernel's minimum
    try:
        g = ffi.new("eb_grant *")
        topic = b"short"
        g.topic_len = len(topic)
        ffi.memmove(g.topic, topic, len(topic))
        g.partition = 0
        g.log_end = 10
        g.seg_base = 0
        g.seg_size = 100
        g.first_append_time = 1
        g.max_append_time = 1
        g.segment_bytes = g.segment_ms = 1 << 62
        g.max_message_bytes = 1 << 20
        g.index_interval = 1 << 20
        g.index_ok = 0
        g.fd = fd
        g.w_ring = ffi.NULL
        g.w_sock = cons_sv.fileno()
        g.w_corr = 77
        g.w_offset = 10
        g.w_min_bytes = 1
        call = ffi.new("eb_plane_call *")
        out, rest = ffi.new("char[]", 4096), ffi.new("char[]", 8 * 8192)
        call.out, call.out_cap = out, 4096
        call.rest, call.rest_cap = rest, 8 * 8192
        call.budget = 1 << 40
        frames = (produce_frame(1, "short", 1, batch([b"a" * 7000]))
                  + produce_frame(2, "short", 1, batch([b"b" * 10])))
        buf = bytearray(frames)
        ptrs = ffi.new("eb_grant *[]", [g])
        at = lib.eb_plane_sock_serve(prod_sv.fileno(), ffi.from_buffer(buf), 0, len(buf), ptrs, 1,
                                     call)
        assert at == len(buf) and call.frames == 2 and call.answers == 2
        assert g.w_answers == 1, "the second batch must not be answered behind the rest"
        assert call.rest_len > 0 and g.w_rest_len == call.rest_len and g.w_rest_at == 0
        stored = seg.read_bytes()[100:]
        first = stored[:len(stored) - len(batch([b"b" * 10]))]
        want = encode_fetched_one(77, "short", 0, 11, 0, first)
        cons_client.setblocking(False)
        got = b""
        while True:
            try:
                chunk = cons_client.recv(1 << 16)
            except BlockingIOError:
                break
            got += chunk
        assert 0 < len(got) < len(want)
        assert got + ffi.unpack(rest + g.w_rest_at, g.w_rest_len) == want
        assert g.w_offset == 11  # moved past the batch answered
        assert call.sent == call.out_len  # the producer's two answers went whole
    finally:
        os.close(fd)
        for s in (cons_sv, cons_client, prod_sv, prod_client):
            s.close()
