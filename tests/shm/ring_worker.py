"""A ring writer in its own process, for the two-process stress test.

    python -m tests.shm.ring_worker MEMFD CAPACITY COUNT SEED DATA_EFD SPACE_EFD SPIN_NS

Writes COUNT frames of random sizes (seeded) into the ring at offset 0 of MEMFD; each body is
seq (u32) + crc32 of the rest (u32) + filler. Waits for room the way the clients do: spin, then
announce the wait, re-check, and sleep on SPACE_EFD; signals DATA_EFD through the ring code.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import struct
import sys
import zlib

from edgebus.shm import ring as R


def body_for(seq: int, rnd: random.Random, max_body: int) -> bytes:
    size = rnd.choice([0, 1, 7, 8, 64, 100, 1000, rnd.randint(0, max_body - 8)])
    filler = bytes([seq % 256]) * size
    return struct.pack("<II", seq, zlib.crc32(filler)) + filler


def main() -> None:
    memfd, cap, count, seed, efd_data, efd_space, spin = map(int, sys.argv[1:8])
    m = R.Mapping(memfd, R.ring_bytes(cap))
    w = R.Ring(m, 0, cap)
    rnd = random.Random(seed)
    poller = select.poll()
    poller.register(efd_space, select.POLLIN)
    sleeps = 0
    for seq in range(count):
        body = body_for(seq, rnd, w.max_frame - 4)
        f = struct.pack("<I", len(body)) + body
        while not w.write(f, efd_data):
            if w.wait_space(len(f), spin) or w.prepare_sleep_space(len(f)):
                continue
            sleeps += 1
            if not poller.poll(10_000):
                # A wake-up that never came while room exists would be a lost wake-up.
                assert not w.can_write(len(f)), "lost wake-up: room but no signal"
                sys.exit("writer timed out waiting for room")
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(efd_space)
    print(sleeps)


if __name__ == "__main__":
    main()
