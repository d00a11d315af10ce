"""Helpers for the shared-memory tests: a ring pair in one process, leftovers, mappings."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path
from typing import Any

from edgebus.shm import ring as R


def make_ring(capacity: int = 4096, max_frame: int | None = None) -> tuple[R.Ring, R.Ring, int]:
    """(writer view, reader view, memfd) of one fresh ring; close the fd when done."""
    fd = os.memfd_create("edgebus-test", os.MFD_CLOEXEC)
    os.ftruncate(fd, R.ring_bytes(capacity))
    m = R.Mapping(fd, R.ring_bytes(capacity))
    R.init_ring(m, 0, capacity, max_frame)
    return R.Ring(m, 0, capacity), R.Ring(m, 0, capacity), fd


def frame(body: bytes) -> bytes:
    return struct.pack("<I", len(body)) + body


def read_bodies(r: R.Ring, **kw: int) -> list[bytes]:
    buf = r.read(**kw)
    return [] if buf is None else [bytes(f) for f in R.iter_frames(buf)]


def dev_shm_entries() -> set[str]:
    p = Path("/dev/shm")
    return {e.name for e in p.iterdir()} if p.exists() else set()


def memfd_mappings(pid: int) -> int:
    """How many edgebus memfd mappings a process has (0 once its rings are reclaimed)."""
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return sum(1 for line in text.splitlines() if "memfd:edgebus-" in line)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def read_answers(link: Any, n: int, timeout: float = 30.0) -> int:
    """A raw ring client (edgebus.client.shm_rings.attach) reads its response ring until `n`
    answers came or `timeout` s passed; how many came (a slow client reading at last)."""
    answered = 0
    deadline = time.monotonic() + timeout
    while answered < n and time.monotonic() < deadline:
        answered += len(link.read(time.monotonic() + 1))
    return answered
