"""Property tests of one ring (in-process, two views of one mapping): any interleaving of writes
and reads of random sizes, wrap-around included, delivers every frame once, intact, in order."""

from __future__ import annotations

import os
import struct
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from edgebus import format as F
from edgebus.shm import ring as R
from tests.shm.helpers import frame, make_ring, read_bodies

pytestmark = pytest.mark.property

CAP = 4096  # small, so that almost every run wraps many times
MAX = CAP // 2


class RingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.w, self.r, self.fd = make_ring(CAP)
        self.model: deque[bytes] = deque()  # written, not yet read
        self.seq = 0
        self.used = 0  # model of head - tail upper bound

    def teardown(self) -> None:
        os.close(self.fd)

    @rule(size=st.one_of(st.integers(0, 64), st.integers(0, MAX - 4)))
    def write(self, size: int) -> None:
        self.seq += 1
        body = struct.pack("<I", self.seq) + bytes([self.seq % 251]) * max(0, size - 4)
        body = body[:size] if size < 4 else body
        fits = self.w.can_write(len(body) + 4)
        ok = self.w.write(frame(body))
        assert ok == fits
        if ok:
            self.model.append(body)

    @rule(max_frames=st.integers(1, 8), max_bytes=st.integers(1, CAP))
    def read(self, max_frames: int, max_bytes: int) -> None:
        got = read_bodies(self.r, max_frames=max_frames, max_bytes=max_bytes)
        assert len(got) <= max_frames
        if self.model and not got:
            # Only the trailing padding can hide a frame for one read; the next read finds it.
            got = read_bodies(self.r, max_frames=max_frames, max_bytes=max_bytes)
            assert got, "a published frame was not delivered"
        for body in got:
            assert self.model, "a frame was delivered twice or invented"
            assert body == self.model.popleft(), "a frame was reordered or corrupted"

    @rule()
    def drain(self) -> None:
        while self.model:
            for body in read_bodies(self.r):
                assert body == self.model.popleft()
        assert read_bodies(self.r) == []
        assert self.r.head == self.r.tail

    @invariant()
    def counters_are_sane(self) -> None:
        used = self.r.head - self.r.tail
        assert 0 <= used <= CAP and used % F.RING_ALIGN == 0
        assert used >= sum(4 + len(b) for b in self.model)


RingMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestRingStateMachine = RingMachine.TestCase


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, MAX - 4)), max_size=200))
def test_any_interleaving_delivers_every_frame_once_in_order(ops: list[tuple[bool, int]]) -> None:
    w, r, fd = make_ring(CAP)
    try:
        sent: list[bytes] = []
        got: list[bytes] = []
        for i, (is_write, size) in enumerate(ops):
            if is_write:
                body = (i.to_bytes(4, "little") * (size // 4 + 1))[:size]
                if w.write(frame(body)):
                    sent.append(body)
            else:
                got += read_bodies(r, max_frames=1 + size % 5)
        while len(got) < len(sent):
            more = read_bodies(r)
            assert more or len(got) < len(sent)
            got += more
        assert got == sent
    finally:
        os.close(fd)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=F.RING_HEADER_SIZE, max_size=F.RING_HEADER_SIZE + CAP),
       st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_a_hostile_writer_cannot_make_the_reader_overrun(garbage: bytes, head: int, tail: int) -> None:
    """Whatever a peer writes into the shared bytes, a read returns whole frames within bounds
    or raises RingError; it never crashes or reads outside the mapping."""
    _w, r, fd = make_ring(CAP)
    try:
        from edgebus.shm._ring import ffi

        base = r.d.hdr
        buf = ffi.buffer(base, F.RING_HEADER_SIZE + CAP)
        data = garbage[F.RING_HEADER_SIZE:]
        buf[F.RING_HEADER_SIZE : F.RING_HEADER_SIZE + len(data)] = data
        # Counters and flags: the test plays the hostile peer (the ring code never does this).
        buf[F.RING_HEAD : F.RING_HEAD + 8] = struct.pack("<Q", head)
        buf[F.RING_TAIL : F.RING_TAIL + 8] = struct.pack("<Q", tail)
        for _ in range(4):
            try:
                out = r.read()
            except R.RingError:
                break
            if out is None:
                break
            total = 0
            for f in R.iter_frames(out):
                assert len(f) + 4 <= r.max_frame
                total += len(f) + 4
            assert total == len(out)
    finally:
        os.close(fd)


def test_frame_limits() -> None:
    w, r, fd = make_ring(CAP)
    try:
        with pytest.raises(ValueError):
            w.write(frame(b"x" * MAX))  # MAX + 4 > max_frame
        assert w.write(frame(b"x" * (MAX - 4)))
        with pytest.raises(ValueError):
            w.write(b"\x05\x00\x00\x00abc")  # length prefix disagrees with the size
        assert read_bodies(r) == [b"x" * (MAX - 4)]
    finally:
        os.close(fd)


def test_geometry_is_checked() -> None:
    fd = os.memfd_create("edgebus-test", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, R.ring_bytes(CAP))
        m = R.Mapping(fd, R.ring_bytes(CAP))
        with pytest.raises(ValueError):
            R.init_ring(m, 0, 3000)  # not a power of two
        with pytest.raises(R.RingError):
            R.Ring(m, 0, CAP)  # no header yet
        R.init_ring(m, 0, CAP)
        with pytest.raises(R.RingError):
            R.Ring(m, 0, CAP * 2)  # the mapping size disagrees with the header
        m.close()
    finally:
        os.close(fd)
