"""The parked loop (edgebus/shm/park.c) across processes: a real supervisor that never spins
(EDGEBUS_SHM_SPIN_GAP_US=0), so it waits in eb_park_wait between frames and announces its sleep
on each ring in C (eb_prepare_sleep_data: flag, fence, re-check), and shm producers in their
own processes that never spin either (tests/shm/park_worker.py), with both rings of the
smallest size wrapping every few dozen frames. Most of their frames come in pairs, the second
aimed at the moment the supervisor, done with the first, finds its ring empty and sets its
waiting flag.

What it would catch on a weakly ordered CPU (docs/ARCHITECTURE.md, "Parked in C", memory
order): a frame or answer read before its bytes are visible (the supervisor's CRC check fails
it, or an answer's offset is wrong: the worker exits with the reason), space reused before the
reader is done (a record's seq or CRC is wrong when the topic is read back), and a lost wake-up
(a bounded wait ends with the frame still in its ring: the worker says whose). How sharp it is,
measured on x86 (load 13-17) with park.c mutated: without the re-check and with 5 us between
the last look and the flag, it failed at once; without the re-check at all (a window of tens of
nanoseconds), in about one run in four of 3,000 frames; with the re-check but no fence (a
window of a few nanoseconds, which x86's store buffer can open), in none of four. So, like
tests/shm/test_ring_processes.py, it is a net whose catch grows with its length: on a Pi run it
with EDGEBUS_PARK_STRESS_FRAMES=100000 or more. Emulation (scripts/arm64-check) runs it in the
host's strong order.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from edgebus import Admin
from edgebus.server.listeners import shm_plane
from edgebus.testing import EmbeddedBroker
from tests.shm.test_c_park import park
from tests.shm.test_c_plane import records

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not shm_plane.available(),
                                 reason="the C data plane is not built (edgebus.shm._plane) or "
                                        "EDGEBUS_SHM_C_PLANE=0")]

ROOT = Path(__file__).resolve().parents[2]
NEVER_SPIN = {"EDGEBUS_SHM_SPIN_GAP_US": "0", "EDGEBUS_SHM_SPIN_US": "0"}
# Frames per producer: 4,000 takes a few seconds here; scripts/arm64-check (qemu) sets fewer,
# and on a Pi more is better (the module's doc).
FRAMES = int(os.environ.get("EDGEBUS_PARK_STRESS_FRAMES", "4000"))
PRODUCERS = 2  # two links parked at once: the park set holds both, each on its own partition


def test_parked_loop_two_process_stress(tmp_path: Path) -> None:
    b = EmbeddedBroker(tmp_path / "b").start(env=NEVER_SPIN)
    try:
        topics = [f"stress{i}" for i in range(PRODUCERS)]
        with Admin(socket=b.socket, transport="socket") as a:
            for t in topics:
                a.create_topic(t, 1, config={"segment_bytes": 256 * 1024})
        procs = [subprocess.Popen(
            [sys.executable, "-m", "tests.shm.park_worker", b.socket, t, str(FRAMES), str(i + 1),
             "4096"], cwd=ROOT, env={**os.environ, **NEVER_SPIN},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i, t in enumerate(topics)]
        counts = []
        for p in procs:
            out, err = p.communicate()
            assert p.returncode == 0, err.decode()[-2000:]
            word, frames, recs = out.split()
            assert word == b"ok" and int(frames) == FRAMES
            counts.append(int(recs))
        for t, n in zip(topics, counts, strict=True):
            got = records(b.socket, t)
            assert [o for o, _ in got] == list(range(n)), f"{t}: offsets not dense from 0 to {n}"
            for off, v in got:
                assert v is not None
                seq, crc = struct.unpack_from("<II", v)
                assert seq == off, f"{t}: record {seq} at offset {off}"
                assert crc == zlib.crc32(v[8:]) and v[8:] == bytes([seq % 251]) * (len(v) - 8), \
                    f"{t}: record {seq} torn"
        after = park(b.socket)  # made at the first shm attach; None: EDGEBUS_SHM_C_PARK=0
        assert after is not None, "the parked loop is off"
        served = after["wakeups"]
        # The wake-ups really were served in C (not all handed to Python's turn): at least one
        # frame in ten. (Bursts, the per-grant room of 32 batches and index entries go to Python.)
        assert served >= PRODUCERS * FRAMES // 10, (served, after)
    finally:
        b.cleanup()
