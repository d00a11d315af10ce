"""The floor under any cross-process hand-off on this machine: one-way latency between two bare
Python processes, the receiver blocked on an eventfd until the sender writes it.

    python -m bench.wakeup [--rate 10000] [--count 20000]

No edgebus code runs: this is what waking a sleeping process costs by itself, for reading the
edgebus latency figures against (a message through edgebus makes two such hops when nobody
spins). Prints p50/p99 and writes bench/results/wakeup.json.
"""

from __future__ import annotations

import argparse
import json
import mmap
import multiprocessing as mp
import os
import struct
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
# The send time (monotonic ns), written before the eventfd write; the kernel's eventfd write and
# read order it for the receiver. A new value is a new message (merged wake-ups skip some).
_SLOT = struct.Struct("<q")


def _receiver(efd: int, shared: Any, out: Any) -> None:
    lat: list[int] = []
    last = 0
    mono = time.monotonic_ns
    while True:
        os.eventfd_read(efd)
        ts = _SLOT.unpack_from(shared, 0)[0]
        if ts == last:
            continue
        if ts < 0:  # the end marker
            break
        lat.append(mono() - ts)
        last = ts
    lat.sort()
    out.put(lat)


def measure(rate: float, count: int) -> dict[str, Any]:
    efd = os.eventfd(0)
    shared = mmap.mmap(-1, mmap.PAGESIZE)
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    p = ctx.Process(target=_receiver, args=(efd, shared, out))
    p.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    for k in range(1, count + 1):
        delay = t0 + k / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        _SLOT.pack_into(shared, 0, time.monotonic_ns())
        os.eventfd_write(efd, 1)
    time.sleep(0.01)
    _SLOT.pack_into(shared, 0, -1)
    os.eventfd_write(efd, 1)
    lat = out.get(timeout=60)
    p.join(10)
    os.close(efd)
    return {"mode": "eventfd", "samples": len(lat), "p50_us": lat[len(lat) // 2] / 1000,
            "p99_us": lat[int(len(lat) * 0.99)] / 1000}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.wakeup", description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=10_000)
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    rows = [measure(args.rate, args.count)]
    for r in rows:
        print(f"{r['mode']:8s} p50 {r['p50_us']:7.1f} us  p99 {r['p99_us']:7.1f} us  ({r['samples']} samples)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "wakeup.json").write_text(json.dumps(
        {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rate": args.rate, "results": rows}, indent=1) + "\n")
    print(f"wrote {out}/wakeup.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
