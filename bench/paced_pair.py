"""One paced producer and one tail consumer forked beside a supervisor, as the issue 16 benchmarks
run them (bench/wakeups.py, park_returns.py, consumer_calls.py, consumer_wakes.py, hops.py,
tail_where.py): written once here so that their figures speak of the same set-up.

The protocol between this process and its two children (`PacedPair`): each child starts its
client, puts `(role, pid, ...)` on `ready` ("c" the consumer, "p" the producer; the consumer is
started and ready first, so that it sees every record), waits for `go`, does its work, puts
`(role, ...)` on `results` and, if it waits for `done`, closes its client only after: counters
read between the results and `done` see no close.

Also: the paced schedule (`paced`, bench/run.py's producers' too), the 16-byte stamp each record
starts with, a case's topic (`new_topic`), the per-thread counters read of the processes
(`thread_counters`); and what hops.py and tail_where.py share: a supervisor started through a
script that wraps its methods first (`wrapped_supervisor`), the stamped children's frame
(`paced_child`, `stamped_polls`: the consumer's poll loop) and each collection's span
(`gc_spans`).

Run against another checkout (`--base TREE`), a case's process imports TREE's edgebus and this
checkout's bench/, this module included (bench/trees.py; tail_where.py, run by hand in another
tree, puts its own bench/ first): a tree older than this module needs none of it.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import queue
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgebus.testing import EmbeddedBroker

STAMP = struct.Struct("<qq")  # a record's first 16 bytes: a monotonic ns time, its sequence number
SIZE = 100  # the records' size where a benchmark does not choose it


def paced(n: int, rate: float) -> Iterator[tuple[int, int]]:
    """`(k, due)` for k in range(n), each when it is due: due = start + k / rate (monotonic ns).
    A schedule that slips is not stretched: the records made late carry their due time (no
    coordinated omission, as bench/run.py's producers)."""
    mono_ns = time.monotonic_ns
    sleep = time.sleep
    step_ns = 1e9 / rate
    t0 = mono_ns()
    for k in range(n):
        due = t0 + int(k * step_ns)
        delay = due - mono_ns()
        if delay > 0:
            sleep(delay / 1e9)
        yield k, due


def thread_names() -> dict[int, str]:
    """This process's threads: native id -> name (a client's sender, reader, I/O thread)."""
    return {t.native_id or 0: t.name for t in threading.enumerate()}


# --- what is read of the pair's processes ---------------------------------------------------------------------
def thread_counters(pid: int) -> dict[int, tuple[int, int, int]]:
    """tid -> (CPU ns, voluntary switches, involuntary switches) of every thread of pid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
            vol = invol = 0
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        vol = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        invol = int(line.split()[1])
        except OSError:
            continue  # the thread ended meanwhile
        out[int(tid)] = (ns, vol, invol)
    return out


def threads_since(a: dict[int, tuple[int, int, int]], b: dict[int, tuple[int, int, int]]
                  ) -> dict[int, tuple[int, int, int]]:
    """Each thread's counters in b less those in a (0 for a thread started meanwhile)."""
    z = (0, 0, 0)
    return {t: tuple(y - x for x, y in zip(a.get(t, z), v, strict=True))  # type: ignore[misc]
            for t, v in b.items()}


# --- the children of bench/wakeups.py's kind ----------------------------------------------------
def producer(sock: str, transport: str, topic: str, rate: int, n: int, ready: Any, go: Any,
             done: Any, results: Any) -> None:
    """A producer `send()` (linger_ms=0, acks="written") of n records of SIZE bytes at `rate`,
    after one warm-up record it waits for. Its result: `("p", thread names, requests per record)`
    (below 1: records held back into batches while the supervisor had not read the last ones)."""
    from edgebus import Producer

    p = Producer(socket=sock, transport=transport, acks="written", linger_ms=0)
    p.send(topic, b"warm", partition=0).get(10)
    m0 = p.metrics()["producer-metrics"]
    ready.put(("p", os.getpid(), thread_names()))
    go.wait()
    pad = b"x" * (SIZE - STAMP.size)
    for k, due in paced(n, rate):
        p.send(topic, STAMP.pack(due, k) + pad, partition=0)
    p.flush(60)
    m1 = p.metrics()["producer-metrics"]
    results.put(("p", thread_names(), (m1["batch-send-total"] - m0["batch-send-total"])
                 / max(1, m1["record-send-total"] - m0["record-send-total"])))
    done.wait()
    p.close(10)


def latencies(recs: Any, now: int) -> list[int]:
    """ns from each paced record's due time to `now`; the producer's warm-up record left out."""
    return [now - STAMP.unpack_from(v)[0] for r in recs
            if (v := r.value) is not None and len(v) == SIZE]


def consumer(sock: str, transport: str, topic: str, n: int, ready: Any, go: Any, done: Any,
             results: Any) -> None:
    """The paced benchmarks' consumer (bench/clients.py tail_consumer, `poll(50)`) until n records
    came (or 120 s). Its result: `("c", records, p50 us, thread names, p99 us)`."""
    from bench.clients import tail_consumer

    c = tail_consumer(sock, transport, topic)
    ready.put(("c", os.getpid(), thread_names()))
    go.wait()
    got, lat = 0, []
    hard = time.monotonic() + 120
    while got < n and time.monotonic() < hard:
        for recs in c.poll(50, max_records=1_000_000).values():
            mine = latencies(recs, time.monotonic_ns())
            got += len(mine)
            lat += mine
    lat.sort()
    results.put(("c", got, lat[len(lat) // 2] / 1000 if lat else -1, thread_names(),
                 lat[len(lat) * 99 // 100] / 1000 if lat else -1))
    done.wait()
    c.close()


class PacedPair:
    """The two children forked against `sock` and ready (the consumer first): their pids in
    `pids`; `run()` lets them go and returns their results by role; `close()` lets them close
    and joins them. The child functions take (sock, transport, topic, rate or n, ..., ready, go,
    done, results, *extra) as `producer` and `consumer` above. consumer=None: the caller runs
    the consumer itself (started and ready before), and only the producer is forked."""

    def __init__(self, sock: str, transport: str, topic: str, rate: int, n: int, *,
                 consumer: Callable[..., None] | None = consumer,
                 consumer_extra: tuple[Any, ...] = (),
                 producer: Callable[..., None] = producer, producer_extra: tuple[Any, ...] = ()
                 ) -> None:
        ctx = mp.get_context("fork")
        self.ready, self.results = ctx.Queue(), ctx.Queue()
        self.go, self.done = ctx.Event(), ctx.Event()
        q = (self.ready, self.go, self.done, self.results)
        self.procs: list[Any] = []
        self.pids: dict[str, int] = {}
        for role, target, args in (
                ("c", consumer, (sock, transport, topic, n, *q, *consumer_extra)),
                ("p", producer, (sock, transport, topic, rate, n, *q, *producer_extra))):
            if target is None:
                continue
            proc = ctx.Process(target=target, args=args, daemon=True)
            proc.start()
            self.procs.append(proc)
            got = self.ready.get(timeout=60)
            self.pids[role] = got[1]

    def run(self, timeout: float) -> dict[str, Any]:
        """Go; each child's result (the tuple it put), by role."""
        self.go.set()
        got: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(self.procs):
            try:
                r = self.results.get(timeout=1)
            except queue.Empty:
                # a child that died gives no result: say so now, not at the timeout
                dead = [f"{p.name} exit {p.exitcode}" for p in self.procs if p.exitcode]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"no result from the paced pair's children within "
                                       f"{timeout:.0f} s ({', '.join(dead) or 'none died'})"
                                       ) from None
                continue
            got[r[0]] = r
        return got

    def close(self, timeout: float = 30) -> None:
        self.done.set()
        for proc in self.procs:
            proc.join(timeout)

    def __enter__(self) -> PacedPair:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        for proc in self.procs:  # a child may wait for go or done for good: not joined, ended
            proc.kill()
            proc.join(10)


def new_topic(sock: str, prefix: str, **config: Any) -> str:
    """A topic of one partition made for this case (its name: prefix and this process's pid)."""
    from edgebus import Admin

    topic = f"{prefix}-{os.getpid()}"
    with Admin(socket=sock, transport="socket") as a:
        a.create_topic(topic, 1, config=config or None)
    return topic


# --- hops.py and tail_where.py: a supervisor with wrapped methods, stamped clients ------------------
def wrapped_supervisor(script: str, env: dict[str, str]) -> EmbeddedBroker:
    """An EmbeddedBroker whose supervisor is `python SCRIPT --serve CONFIG` (the benchmark script
    wraps the supervisor's methods, then serves; run by path, so that the script of this
    checkout wraps another tree's edgebus too), with `env` added to its environment; started and
    ready."""
    from edgebus.testing import EmbeddedBroker

    # The script imports bench/: its checkout after whatever PYTHONPATH names (another tree's)
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"),
                                       str(Path(script).resolve().parents[1])) if p)
    broker = EmbeddedBroker(log_level="WARNING")
    broker._log_file = open(broker.log_path, "ab")  # noqa: SIM115 (EmbeddedBroker.start's way)
    broker.proc = subprocess.Popen(
        [sys.executable, script, "--serve", str(broker.config_path)],
        stdout=broker._log_file, stderr=subprocess.STDOUT,
        env={**os.environ, **env, "PYTHONPATH": path})
    broker.wait_ready()
    return broker


def paced_child(n: int, rate: float, ready: Any, go: Any) -> Iterator[tuple[int, int]]:
    """A forked producer's schedule, its client made: says ready, waits for go, then `paced`
    with bench/run.py's fine timers (sleeps of a few microseconds)."""
    from bench.run import _tight_timers

    ready.put(("p", os.getpid()))
    go.wait()
    _tight_timers()
    yield from paced(n, rate)


def stamped_polls(sock: str, transport: str, topic: str, n: int, ready: Any, go: Any,
                  results: Any) -> Iterator[tuple[int, int, list[Any]]]:
    """A forked consumer of hops or tail_where (its stamps set up before the first iteration):
    its heap frozen (bench/run.py child_heap), a tail_consumer, ready, go, then each poll
    with records (tail_polls); at the end the consumer closed and `("c", records)` its result."""
    from bench.clients import tail_consumer
    from bench.run import child_heap

    child_heap()
    c = tail_consumer(sock, transport, topic)
    ready.put(("c", os.getpid()))
    go.wait()
    got = 0
    for poll in tail_polls(c, n):
        got += len(poll[2])
        yield poll
    c.close()
    results.put(("c", got))


def tail_polls(c: Any, n: int) -> Iterator[tuple[int, int, list[Any]]]:
    """`(ns when poll() was called, ns when it returned, its records)` for each of the consumer's
    polls that returned records, until n records came (or 120 s)."""
    got = 0
    mono_ns = time.monotonic_ns
    hard = mono_ns() + 120_000_000_000
    while got < n and mono_ns() < hard:
        t0 = mono_ns()
        out = c.poll(50, max_records=1_000_000)
        if out:
            t1 = mono_ns()
            recs = [r for rs in out.values() for r in rs]
            got += len(recs)
            yield t0, t1, recs


def gc_spans(record: Callable[[int, int, int], None]) -> None:
    """After each of this process's collections: record(start ns, end ns, generation)."""
    t0 = [0]
    now = time.monotonic_ns

    def cb(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            t0[0] = now()
        else:
            record(t0[0], now(), info["generation"])

    gc.callbacks.append(cb)
