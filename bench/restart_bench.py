#!/usr/bin/env python3
"""Start-up time of the storage engine with a large log.

Fills a data directory with ~1 GiB of log through LogManager (several partitions, 1 KiB records
batched), closes it, and times LogManager.open():
  - clean restart: after close() wrote the final checkpoint, nothing is scanned;
  - unclean stop: a child process writes a checkpoint, appends --tail-mib more and is killed
    with SIGKILL; open() scans only what follows the checkpoint;
  - no checkpoint: the checkpoint file is removed, so open() scans (CRC-checks) everything.
With --drop-caches (root only) each open also runs with a cold page cache, as after a reboot.

    python3 bench/restart_bench.py [--total-mib 1024] [--partitions 4] [--keep]

Prints the figures and writes them as JSON to bench/results/restart.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgebus.batch import BatchInfo, build_batch, encode_record, validate_batch  # noqa: E402
from edgebus.log import LogManager, TopicConfig  # noqa: E402

TOPIC = "bench"
MIB = 1024 * 1024


def templates(record_bytes: int, per_batch: int, n: int = 8) -> list[tuple[bytes, BatchInfo]]:
    """A few distinct batches to copy from: appends then cost a memcpy, not an encode."""
    out = []
    for t in range(n):
        value = bytes([65 + t]) * record_bytes
        recs = [encode_record(1_700_000_000_000 + i, b"k%d" % i, value, []) for i in range(per_batch)]
        b = build_batch(recs, 1_700_000_000_000, 1_700_000_000_000 + per_batch)
        out.append((b, validate_batch(b)))
    return out


def sync_all(m: LogManager) -> None:
    for p in m.all_partitions():
        t = p.begin_sync()
        if t is not None:
            t.run()
            p.complete_sync(t)


def append_bytes(m: LogManager, total: int, args: argparse.Namespace, checkpoint_every: int) -> int:
    """Append about `total` bytes round-robin over the partitions; sync and checkpoint every
    `checkpoint_every` bytes, as the supervisor does periodically (0 = never)."""
    tpl = templates(args.record_bytes, args.batch_records)
    parts = m.partitions(TOPIC)
    written = since = i = 0
    while written < total:
        raw, info = tpl[i % len(tpl)]
        p = parts[i % len(parts)]
        p.append(bytearray(raw), info, int(time.time() * 1000))
        written += len(raw)
        since += len(raw)
        i += 1
        if checkpoint_every and since >= checkpoint_every:
            sync_all(m)
            m.write_checkpoint()
            since = 0
    return written


def timed_open(data_dir: Path, drop_caches: bool) -> tuple[float, int, LogManager]:
    if drop_caches:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    m = LogManager(data_dir)
    t0 = time.perf_counter()
    m.open()
    dt = time.perf_counter() - t0
    scanned = sum(p.recovery_report.scanned_bytes for p in m.all_partitions()
                  if p.recovery_report is not None)
    return dt, scanned, m


def child_unclean(args: argparse.Namespace) -> None:
    """Open, checkpoint, append --tail-mib without another checkpoint, then die by SIGKILL."""
    m = LogManager(args.data_dir)
    m.open()
    sync_all(m)
    m.write_checkpoint()
    append_bytes(m, args.tail_mib * MIB, args, 0)
    os.kill(os.getpid(), signal.SIGKILL)


def measure(args: argparse.Namespace, data_dir: Path) -> dict:
    res: dict = {}
    cfg = TopicConfig(partitions=args.partitions, segment_bytes=args.segment_mib * MIB,
                      retention_ms=-1)
    m = LogManager(data_dir)
    m.open()
    m.create_topic(TOPIC, cfg)
    t0 = time.perf_counter()
    written = append_bytes(m, args.total_mib * MIB, args, args.checkpoint_mib * MIB)
    m.close()
    fill_s = time.perf_counter() - t0
    segments = len(list(data_dir.glob("*/*.log")))
    res["fill"] = {"bytes": written, "seconds": round(fill_s, 3),
                   "mib_per_s": round(written / MIB / fill_s, 1), "segments": segments}
    print(f"filled {written / MIB:.0f} MiB in {segments} segments over {args.partitions} "
          f"partitions in {fill_s:.2f} s ({written / MIB / fill_s:.0f} MiB/s)")

    def runs(label: str, n: int, cold: bool) -> dict:
        times, scanned = [], 0
        for _ in range(n):
            dt, scanned, mm = timed_open(data_dir, cold)
            mm.close()
            times.append(dt)
        out: dict[str, Any] = {"runs_s": [round(t, 6) for t in times],
                               "median_s": round(statistics.median(times), 6),
                               "scanned_bytes": scanned}
        print(f"{label:<34} median {out['median_s'] * 1000:8.2f} ms  "
              f"(min {min(times) * 1000:.2f} ms, {n} runs, scanned {scanned / MIB:.1f} MiB)")
        return out

    res["clean_open"] = runs("clean restart, warm cache", args.repeat, False)
    if args.drop_caches:
        res["clean_open_cold"] = runs("clean restart, cold cache", args.repeat, True)

    for label, cold in [("unclean", False)] + ([("unclean_cold", True)] if args.drop_caches else []):
        child = [sys.executable, __file__, "--child-unclean", "--data-dir", str(data_dir),
                 "--tail-mib", str(args.tail_mib), "--record-bytes", str(args.record_bytes),
                 "--batch-records", str(args.batch_records)]
        r = subprocess.run(child, check=False)
        assert r.returncode == -signal.SIGKILL, f"child exited with {r.returncode}"
        dt, scanned, mm = timed_open(data_dir, cold)
        mm.close()
        res[label + "_open"] = {"seconds": round(dt, 6), "scanned_bytes": scanned}
        print(f"{'unclean stop (kill -9), ' + ('cold' if cold else 'warm') + ' cache':<34} "
              f"{dt * 1000:8.2f} ms  (scanned {scanned / MIB:.1f} MiB past the checkpoint)")

    for label, cold in [("no_checkpoint", False)] + (
        [("no_checkpoint_cold", True)] if args.drop_caches else []
    ):
        if not cold:  # read everything once so that the warm figure is really warm
            for f in data_dir.glob("*/*.log"):
                with open(f, "rb") as fh:
                    while fh.read(8 * MIB):
                        pass
        (data_dir / "recovery-checkpoint").unlink()
        dt, scanned, mm = timed_open(data_dir, cold)
        mm.close()
        res[label + "_open"] = {"seconds": round(dt, 6), "scanned_bytes": scanned}
        print(f"{'no checkpoint (full scan), ' + ('cold' if cold else 'warm') + ' cache':<34} "
              f"{dt * 1000:8.2f} ms  (scanned {scanned / MIB:.1f} MiB, "
              f"{scanned / MIB / dt:.0f} MiB/s)")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None, help="default: a temporary directory")
    ap.add_argument("--total-mib", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--record-bytes", type=int, default=1024)
    ap.add_argument("--batch-records", type=int, default=16)
    ap.add_argument("--segment-mib", type=int, default=64)
    ap.add_argument("--checkpoint-mib", type=int, default=64,
                    help="sync + checkpoint every this many MiB while filling")
    ap.add_argument("--tail-mib", type=int, default=32,
                    help="written after the last checkpoint before the kill -9")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--drop-caches", action="store_true", help="also time cold starts (root)")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "restart.json")
    ap.add_argument("--child-unclean", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_unclean:
        child_unclean(args)
        return
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="edgebus-bench-")) / "data"
    try:
        res = measure(args, data_dir)
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    res["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k != "child_unclean"}
    res["machine"] = {"python": platform.python_version(), "platform": platform.platform(),
                      "cpus": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
