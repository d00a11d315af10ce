"""What the replication benchmarks share (bench/replication.py, replication_kafka.py,
replication_nats.py, replication_policies.py): the replicator as a process, a backlog written
while it is stopped, sends at a steady rate, CPU seconds of processes, lag quantiles, and the
report file with the machine's load around the run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from edgebus import Producer

RESULTS = Path(__file__).resolve().parent / "results"


def cpu(*pids: int) -> float:
    """User + system CPU seconds of these processes so far."""
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def start_replicator(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edgebus.cli.main", "replicate", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        proc.kill()
        proc.wait()


def write_backlog(sock: str, topic: str, chunk: list[bytes], records: int) -> None:
    """records // len(chunk) batches of `chunk` into partition 0, all acknowledged."""
    with Producer(socket=sock, batch_size=256 * 1024) as p:
        for _ in range(records // len(chunk)):
            p.send_batch(topic, chunk, partition=0)
        p.flush()


def sync_backlog(sock: str, topic: str) -> None:
    """Have the source fsync partition 0 of `topic` now: a backlog after a link cut is on disk
    (the periodic flush), and the replicator ships only fsynced data, so without this a
    catch-up would time one fsync of the whole backlog at its first read."""
    from edgebus import BatchReader

    with BatchReader(sock) as r:
        end = r.describe(topic).end_offsets[0]
        if end > 0:
            r.read_durable({(topic, 0): end - 1}, 1, sync=True)


def paced(n: int, rate: int, send: Callable[[int], object]) -> None:
    """send(i) for i in 0..n-1, the i-th not before i / rate seconds from the start."""
    start = time.monotonic()
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        send(i)


def quantiles(got: list[float]) -> list[float]:
    """The 99 percentiles of `got` without its first 10 % (warm-up); NaNs with too few."""
    kept = got[len(got) // 10:]
    return statistics.quantiles(kept, n=100) if len(kept) > 100 else [float("nan")] * 99


def write_report(out: str | Path, load_before: tuple[float, float, float], **results: Any) -> None:
    """The machine, its load before and after, the time, and `results` as JSON in `out`."""
    report = {"machine": {"cpus": os.cpu_count(), "arch": platform.machine(),
                          "python": platform.python_version(), "load_before": load_before,
                          "load_after": os.getloadavg()},
              "when": time.strftime("%Y-%m-%d %H:%M:%S"), **results}
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
