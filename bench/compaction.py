"""Log compaction: what cleaning a big compacted topic costs, and what it does to other requests.

A topic of --mib MiB (default 256) of 1 KiB values over 10,000 keys is written with
cleanup_policy=delete, then read once from the beginning by a native Consumer (the reference
time). A probe measures request latency (a 100-byte acks=written send, one at a time) for a few
seconds; then the topic is switched to compact and the same probe runs while the cleaner works.
Reported: the cleaning's time (against the read-once time), bytes it read and wrote (its own
count and the supervisor's device writes from /proc/PID/io), the log size before and after, and
the probe's p50/p99 without and with cleaning. The cleaner's pacing is set by --io (bytes/s;
by default one unpaced run (the worst case for other requests) and one at the default
4 MiB/s on a quarter of the size).

    python -m bench.compaction [--mib 256] [--io BYTES_PER_S ...]

Writes bench/results/compaction.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.testing import EmbeddedBroker

RESULTS = Path(__file__).resolve().parent / "results"
TOPIC, KEYS, VALUE = "kettles", 10_000, 1024


def _io_write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _probe(sock: str, seconds: float, until: Any = None) -> list[float]:
    """Round trips (us) of single acks=written sends of 100 bytes, one after the other."""
    lat: list[float] = []
    with Producer(socket=sock, linger_ms=0) as p:
        end = time.monotonic() + seconds
        while time.monotonic() < end and (until is None or not until()):
            t = time.perf_counter()
            p.send("probe", b"p" * 100).get(timeout=10)
            lat.append((time.perf_counter() - t) * 1e6)
            time.sleep(0.002)
    return lat


def _pct(xs: list[float], q: float) -> float:
    return round(sorted(xs)[min(len(xs) - 1, int(q * len(xs)))], 1) if xs else 0.0


def run(mib: int, io: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="edgebus-compaction-", dir="/var/tmp"))
    b = EmbeddedBroker(root, config={"log": {"cleaner_interval_ms": 200,
                                             "cleaner_io_bytes_per_s": io}},
                       log_level="WARNING").start()
    assert b.pid is not None
    try:
        with Admin(socket=b.socket) as a:
            # About 16 segments whatever the size: the active one is never cleaned.
            a.create_topic(TOPIC, 1, config={"retention_ms": -1,
                                             "segment_bytes": max(65536, mib * 2**20 // 16)})
            a.create_topic("probe", 1)
        n = mib * 2**20 // (VALUE + 40)
        value = os.urandom(VALUE // 2).hex().encode()
        t0 = time.monotonic()
        with Producer(socket=b.socket, acks="durable", linger_ms=5) as p:
            for i in range(n):
                p.send(TOPIC, value, key=b"kettle-%05d" % (i % KEYS))
        write_s = time.monotonic() - t0
        tp = TopicPartition(TOPIC, 0)
        t0 = time.monotonic()
        got = 0
        with Consumer(socket=b.socket, auto_offset_reset="earliest") as c:
            c.assign([tp])
            end = c.end_offsets([tp])[tp]
            while c.position(tp) < end:
                got += sum(len(r) for r in c.poll(timeout_ms=2000).values())
        read_s = time.monotonic() - t0
        with Admin(socket=b.socket) as a:
            size_before = a.status()["topics"][TOPIC]["size_bytes"]
        quiet = _probe(b.socket, 5.0)

        def cleaned() -> bool:
            with Admin(socket=b.socket) as a:
                st = a.status()["cleaner"]
            return bool(st["cleanings"] > 0 and not st["running"])

        time.sleep(3)  # the background flush has written the produced data back
        w0 = _io_write_bytes(b.pid)
        t0 = time.monotonic()
        with Admin(socket=b.socket) as a:
            a.alter_topic_config(TOPIC, {"cleanup.policy": "compact"})
        busy = _probe(b.socket, 1800.0, until=cleaned)
        deadline = time.monotonic() + 60
        while not cleaned():
            if time.monotonic() > deadline:
                raise RuntimeError("the cleaner did not finish")
            time.sleep(0.05)
        clean_s = time.monotonic() - t0
        device = _io_write_bytes(b.pid) - w0
        with Admin(socket=b.socket) as a:
            st = a.status()
        cl = st["cleaner"]
        return {"mib": mib, "records": n, "keys": KEYS, "value_bytes": VALUE,
                "cleaner_io_bytes_per_s": io, "write_s": round(write_s, 2),
                "read_once_s": round(read_s, 2), "records_read": got,
                "clean_s": round(clean_s, 2), "clean_over_read": round(clean_s / read_s, 2),
                "cleaner_bytes_read": cl["bytes_read"], "cleaner_bytes_written": cl["bytes_written"],
                "device_bytes_written": device, "size_before": size_before,
                "size_after": st["topics"][TOPIC]["size_bytes"],
                "records_removed": cl["records_removed"],
                "probe_quiet_p50_us": _pct(quiet, 0.5), "probe_quiet_p99_us": _pct(quiet, 0.99),
                "probe_cleaning_p50_us": _pct(busy, 0.5), "probe_cleaning_p99_us": _pct(busy, 0.99),
                "probe_cleaning_samples": len(busy),
                "probe_quiet_mean_us": round(statistics.fmean(quiet), 1) if quiet else 0}
    finally:
        b.stop()
        b.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.compaction", description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--io", type=int, action="append",
                    help="cleaner bytes/s, repeatable (default: unpaced, then the default 4 MiB/s "
                         "on a quarter of the size)")
    args = ap.parse_args(argv)
    runs = [(args.mib, io) for io in args.io] if args.io else [
        (args.mib, 2**40), (max(16, args.mib // 4), 4 * 2**20)]
    out = []
    for mib, io in runs:
        r = run(mib, io)
        out.append(r)
        print(f"{r['mib']} MiB, {r['records']:,} records over {r['keys']:,} keys, cleaner paced at "
              f"{'unpaced' if io >= 2**40 else f'{io:,} B/s'}: read once in {r['read_once_s']} s; "
              f"cleaned in {r['clean_s']} s ({r['clean_over_read']}x the read), cleaner read "
              f"{r['cleaner_bytes_read']:,} B and wrote {r['cleaner_bytes_written']:,} B (device "
              f"writes {r['device_bytes_written']:,} B); size {r['size_before']:,} -> "
              f"{r['size_after']:,} B; probe send p50/p99 {r['probe_quiet_p50_us']}/"
              f"{r['probe_quiet_p99_us']} us quiet, {r['probe_cleaning_p50_us']}/"
              f"{r['probe_cleaning_p99_us']} us while cleaning ({r['probe_cleaning_samples']} samples)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compaction.json").write_text(json.dumps(
        {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": out}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
