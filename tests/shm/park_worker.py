"""An shm producer in its own process, for the parked loop's cross-process stress test.

    python -m tests.shm.park_worker SOCKET TOPIC FRAMES SEED RING_BYTES

Run with EDGEBUS_SHM_SPIN_US=0 so that every wait here is an eventfd sleep (never a spin).
Sends FRAMES PRODUCE frames on one raw link with rings of RING_BYTES (4096: both rings wrap
every few dozen frames). Mostly pairs, the second frame aimed at the moment the supervisor,
woken by the first (or still busy), finds its ring empty and announces its sleep (class Chase):
a missing re-check or fence there loses that frame's wake-up, and the pair's answer never
comes. Also single frames (each answered before the next: one sleep and one wake-up on each
side) and pipelined bursts (the request ring fills: the writer sleeps for room while the parked
loop reads). Each record's value is seq (u32) + crc32 of the rest (u32) + filler of a seeded
random size, so the reader of the topic can tell a torn or lost record.

Checks every answer as it comes: no error (a frame torn in the ring fails the supervisor's CRC
check), and the base offset this link's records must have (the topic is this link's alone, so
offsets are dense in send order). A wait that ends without the answer is a lost wake-up, and
the message says which side lost it (the request ring unread: the supervisor's; answers in the
response ring: ours). Exit status 0 and "ok FRAMES RECORDS" on stdout when all went well.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import struct
import sys
import time
import zlib

from edgebus import format as F
from edgebus.shm.ring import ffi
from tests.shm.test_c_plane import _ACK, RawLink, batch, produce_frame

WAIT_S = 60.0  # a bound on one answer's wait, so a lost wake-up fails instead of hanging


def value_for(seq: int, rnd: random.Random) -> bytes:
    size = rnd.choice([0, 1, 7, 64, 100, rnd.randint(0, 500)])  # 3 fit a 4096-byte ring's frame
    filler = bytes([seq % 251]) * size
    return struct.pack("<II", seq, zlib.crc32(filler)) + filler


class Chase:
    """When to write the second frame of a pair: `gap` ns after the first. The supervisor's
    last look at the ring before it sleeps lasts nanoseconds, so a fixed random gap almost never
    lands in it (checked: a park.c without the re-check passed every run that way). The gap is
    steered instead by the reader's waiting flag, read (never written) just before the write:
    set, the supervisor had already gone back to sleep (too late: the gap shrinks); clear, it
    was still serving the first frame (too early: it grows). It so hovers around the moment the
    flag is set, which is where a missing re-check or fence loses a wake-up."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.gap = 5_000.0

    def delay(self) -> int:
        return int(self.gap * self.rnd.uniform(0.8, 1.2))

    def saw(self, flag_was_set: bool) -> None:
        if flag_was_set:
            self.gap = max(100.0, self.gap * 0.9)
        else:
            self.gap = min(200_000.0, self.gap * 1.1 + 50)


def send(link: RawLink, frames: list[bytes], chasers: tuple[Chase, Chase] | None) -> None:
    """Put the frames in the request ring, sleeping for room on efd_space when it is full
    (not ShmRings.write, whose wait for room has no bound that fails). With chasers, each frame
    after the first is written a Chase's gap after the one before (a busy wait); one Chase for
    a supervisor the first frame wakes, one for a supervisor still busy when it came (their
    moments differ by a wake-up)."""
    rings = link.rings
    req = rings.req
    # the supervisor's reader_waiting flag, looked at (never written) to aim the chase
    flag = ffi.cast("uint32_t *", req.d.hdr + F.RING_READER_WAITING)
    poller = select.poll()
    poller.register(rings.efd_space, select.POLLIN)
    wrote = 0
    chase = None if chasers is None else chasers[flag[0] == 1]
    for i, f in enumerate(frames):
        if chase is not None and i:
            until = wrote + chase.delay()
            while time.perf_counter_ns() < until:
                pass
            chase.saw(flag[0] == 1)
        while not req.write(f, rings.efd_sup):
            if req.prepare_sleep_space(len(f)):
                continue  # room came between the write and the announcement
            if not poller.poll(WAIT_S * 1000):
                if req.can_write(len(f)):
                    sys.exit("lost wake-up here: room in the request ring, no signal")
                sys.exit(f"no room in the request ring in {WAIT_S} s")
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(rings.efd_space)
        wrote = time.perf_counter_ns()


def wait_answers(link: RawLink, want: dict[int, int]) -> None:
    """Take answers until every correlation id in `want` (corr -> base offset) is answered."""
    rings = link.rings
    deadline = time.monotonic() + WAIT_S
    while want:
        frames = rings.read(deadline, spin_ns=0)
        if not frames and time.monotonic() >= deadline:
            head, tail = rings.req_head(), rings.req_tail()
            if head != tail:
                sys.exit(f"lost wake-up at the supervisor: request ring unread "
                         f"(head {head}, tail {tail}), answers missing for {sorted(want)}")
            if rings.resp.readable():
                sys.exit(f"lost wake-up here: answers in the response ring, no signal; "
                         f"missing {sorted(want)}")
            sys.exit(f"no answer to {sorted(want)} in {WAIT_S} s, both rings empty")
        for r in frames:
            body = bytes(r.body)
            if r.error_code != 0:
                sys.exit(f"answer to {r.correlation_id}: error {r.error_code} (a torn frame?)")
            n = struct.unpack_from("<H", body)[0]
            _part, base, _atime, _start = _ACK.unpack_from(body, 2 + n)
            expected = want.pop(r.correlation_id, None)
            if expected is None:
                sys.exit(f"an answer to {r.correlation_id}, which was not asked for")
            if base != expected:
                sys.exit(f"answer to {r.correlation_id}: base offset {base}, expected {expected}")


def main() -> None:
    sock, topic, frames_s, seed_s, ring_s = sys.argv[1:6]
    frames, rnd = int(frames_s), random.Random(int(seed_s))
    link = RawLink(sock, int(ring_s))
    corr = seq = 0
    # [0]: the supervisor was busy when the pair's first frame came (flag clear), [1]: asleep
    chasers = (Chase(rnd), Chase(rnd))
    try:
        sent = 0
        while sent < frames:
            # one frame (answered before the next), an aimed pair, or a pipelined burst
            kind = rnd.random()
            burst = 1 if kind < 0.2 else 2 if kind < 0.95 else rnd.randint(3, 24)
            burst = min(burst, frames - sent)
            chased = chasers if 0.2 <= kind < 0.95 else None
            out, want = [], {}
            for i in range(burst):
                corr += 1
                values = [value_for(seq + k, rnd) for k in range(rnd.choice([1, 1, 2, 3]))]
                # acks=none inside a burst too (no answer), never on its last frame
                acks = 0 if i < burst - 1 and rnd.random() < 0.5 else 1
                if acks:
                    want[corr] = seq
                out.append(produce_frame(corr, topic, acks, batch(values)))
                seq += len(values)
            send(link, out, chased)
            wait_answers(link, want)
            sent += burst
    finally:
        link.close()
    print(f"ok {frames} {seq}", flush=True)


if __name__ == "__main__":
    main()
