"""One shared-memory ring as Python sees it: a thin layer over edgebus.shm._ring.

A ring carries frames exactly as the socket does (u32 length, then that many bytes); docs/FORMAT.md
section 6 has the bytes. Reads copy whole frames out into a private bytearray, in the socket's
byte-stream form, so the caller parses them like socket input and the peer cannot change bytes
after they were validated.

Invariants (one writer and one reader per ring, possibly in different processes):
- only the writer stores head, only the reader stores tail (C: release stores, acquire loads);
- only C code touches the counters and flags; Python never writes the shared header.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from edgebus import format as F
from edgebus.shm._ring import ffi, lib

# Frames copied out per read call at most: bounds one client's turn on the supervisor's loop.
READ_MAX_FRAMES = 64
# Bytes copied out per read call at most (a larger single frame is still read whole).
READ_MAX_BYTES = 1024 * 1024


class RingError(Exception):
    """The shared bytes are inconsistent: a corrupt or hostile peer. Drop the link."""


class Mapping:
    """A memfd mapped read-write; owns neither the fd's lifetime nor anything after close()."""

    def __init__(self, fd: int, size: int) -> None:
        ptr = lib.eb_map(fd, size)
        if ptr == ffi.NULL:
            err = ffi.errno
            raise OSError(err, f"mmap of {size} bytes failed: {os.strerror(err)}")
        self.ptr = ptr
        self.size = size

    def close(self) -> None:
        if self.ptr is not None:
            lib.eb_unmap(self.ptr, self.size)
            self.ptr = None


def ring_bytes(capacity: int) -> int:
    """Header plus data area of one ring."""
    return F.RING_HEADER_SIZE + capacity


def init_ring(mapping: Mapping, offset: int, capacity: int, max_frame: int | None = None) -> None:
    """Write a fresh header (the supervisor does this before sharing the memfd)."""
    if max_frame is None:
        max_frame = capacity // 2
    if lib.eb_init(mapping.ptr + offset, capacity, max_frame) != 0:
        raise ValueError(f"bad ring geometry: capacity={capacity} max_frame={max_frame}")


class Ring:
    """One direction of a link, opened on a mapping. Not thread-safe on either side: a side uses
    it from one thread at a time (the clients hold a lock)."""

    __slots__ = ("capacity", "d", "mapping", "max_frame")

    def __init__(self, mapping: Mapping, offset: int, capacity: int) -> None:
        self.mapping = mapping  # keeps the mapping referenced while the ring is in use
        self.d = ffi.new("eb_ring *")
        rc = lib.eb_open(self.d, mapping.ptr + offset, capacity)
        if rc != 0:
            raise RingError(f"ring header at offset {offset} is not valid (check {rc})")
        self.capacity = capacity
        self.max_frame = self.d.max_frame

    # --- writer ----------------------------------------------------------------------------------
    def write(self, frame: bytes | bytearray | memoryview, wake_fd: int = -1) -> bool:
        """Put one whole frame (length prefix included). False when there is no room now."""
        rc = lib.eb_write(self.d, ffi.from_buffer(frame), len(frame), wake_fd)
        if rc >= 0:
            return rc == 1
        if rc == -1:
            raise ValueError(f"frame of {len(frame)} bytes exceeds the ring's {self.max_frame}")
        raise ValueError("frame length prefix does not match its size")

    def can_write(self, n: int) -> bool:
        return bool(lib.eb_can_write(self.d, n))

    def wait_space(self, n: int, spin_ns: int) -> bool:
        return bool(lib.eb_wait_space(self.d, n, spin_ns))

    def prepare_sleep_space(self, n: int) -> bool:
        """Announce a wait for space; True means space is already there (do not sleep)."""
        return bool(lib.eb_prepare_sleep_space(self.d, n))

    # --- reader ----------------------------------------------------------------------------------
    def readable(self) -> bool:
        return bool(lib.eb_readable(self.d))

    def read(self, wake_fd: int = -1, max_frames: int = READ_MAX_FRAMES,
             max_bytes: int = READ_MAX_BYTES) -> bytearray | None:
        """Whole frames in socket byte-stream form, or None when empty."""
        d = self.d
        n = lib.eb_available(d, max_bytes, max_frames)
        if n <= 0:
            if n < 0:
                raise RingError("ring entries are inconsistent")
            if lib.eb_readable(d):  # only padding before the writer's next frame: consume it
                lib.eb_read(d, ffi.NULL, 0, max_frames, wake_fd)
            return None
        buf = bytearray(n)
        got = lib.eb_read(d, ffi.from_buffer(buf), n, max_frames, wake_fd)
        if got != n:
            raise RingError("ring entries changed while being read")
        return buf

    def wait_data(self, spin_ns: int) -> bool:
        return bool(lib.eb_wait_data(self.d, spin_ns))

    def prepare_sleep_data(self) -> bool:
        """Announce a wait for data; True means data is already there (do not sleep)."""
        return bool(lib.eb_prepare_sleep_data(self.d))

    def cancel_sleep_data(self) -> None:
        lib.eb_cancel_sleep_data(self.d)

    # --- introspection (tests, status) -----------------------------------------------------------
    @property
    def head(self) -> int:
        return int(lib.eb_head(self.d))

    @property
    def tail(self) -> int:
        return int(lib.eb_tail(self.d))

    def used(self) -> int:
        # both counters read here, not through the properties: one call per look (a standing
        # fetch's push looks once per answer)
        return int(lib.eb_head(self.d)) - int(lib.eb_tail(self.d))


def iter_frames(buf: bytearray) -> Iterator[memoryview]:
    """The frames in a read() result, each without its length prefix (writable views)."""
    mv = memoryview(buf)
    pos, end = 0, len(buf)
    unpack = F.FRAME_LENGTH.unpack_from
    hdr = F.FRAME_LENGTH_SIZE
    while pos < end:
        n = unpack(buf, pos)[0]
        yield mv[pos + hdr : pos + hdr + n]
        pos += hdr + n


def new_eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def drain_eventfd(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        os.eventfd_read(fd)
