"""edgebus benchmark: edgebus (shm and socket) against the alternatives a user would pick, in one run.

    python -m bench            # the full run (several minutes)
    python -m bench --quick    # a few seconds: 1 -> 1, 100-byte messages only
    python bench/run.py ...    # the same (the Makefile's `make bench`)

Measures, per system, message size and topology (1 -> 1, 4 -> 1, 1 -> 4 fan-out):
- throughput: producers send as fast as they can for a fixed time; msg/s and MB/s counted where
  the consumers receive (end to end; a fan-out message counts once, when all consumers have it);
- one-way latency at a fixed total rate (10,000 msg/s): each payload carries its scheduled send
  time (CLOCK_MONOTONIC, the paced loop's schedule, not the moment send() ran: a producer held up
  counts its delay in every late record, for every system alike), the consumer subtracts it from
  its receive time; p50/p99/p99.9 after a warm-up of the first 10%.
For edgebus: the supervisor's RSS and CPU seconds per million records (its own process only), and
its idle CPU with 10 idle clients connected. Writes bench/results/latest.json, latest.md and a
timestamped copy of each with --archive.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from bench.paced_pair import STAMP, paced
from bench.peers import Ctx
from bench.proc_usage import (  # noqa: F401 (their old import path: bench.run)
    _counters,
    _idle_clients,
    _idle_cpu,
    _pss,
    _server_procs,
    _thread_switches,
    cpu_seconds,
    idle_cpu,
)
from bench.run_report import _progress, find, render_md, table, targets  # noqa: F401 (as above)

RESULTS = Path(__file__).resolve().parent / "results"
RATE = 10_000  # total messages/s in latency runs
_STAMP = STAMP  # send time (monotonic ns), sequence
CHUNK = 1000  # messages per send_many call and per one-record loop between clock checks


def payload(size: int, seq: int, ts: int = 0) -> bytes:
    return _STAMP.pack(ts, seq) + b"x" * (size - _STAMP.size)


def _cpu() -> float:
    # This process's CPU clock (all threads, ns resolution): os.times() counts 10 ms ticks, too
    # coarse for a few microseconds per message over a few seconds.
    return time.process_time()


# The forked producers and consumers inherit this process's heap (the harness's modules, rows,
# adapters): in a case they ran full collections of 20-57 ms over it (bench/hops.py, branch
# lat10k), a pause of the harness, not of the system measured. The parent collects before it
# forks and each child freezes what it inherited (gc.freeze: out of every later collection), for
# every system alike. False: the old behaviour, for before/after runs (bench/paced.py --variants).
CHILD_GC_FREEZE = True


def before_fork() -> None:
    """In the parent, before forking a case's children: the garbage they would otherwise inherit
    and collect."""
    if CHILD_GC_FREEZE:
        gc.collect()


def child_heap() -> None:
    """First thing in a forked child: what it inherited is permanent for it, so its collections
    scan only what it makes itself. `gc.get_freeze_count()` shows it (tests/test_bench_tail.py)."""
    if CHILD_GC_FREEZE:
        gc.freeze()


def _tight_timers() -> None:
    """Sub-100-microsecond sleeps for the fixed-rate producers (default timer slack is 50 us)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK = 1 us


# --- child processes -----------------------------------------------------------------------------
def producer_main(adapter: Any, ctx: Ctx, i: int, size: int, api: str, duration: float,
                  ready: Any, go: Any, results: Any) -> None:
    child_heap()
    try:
        p = adapter.producer(ctx, i)
        ready.put(("p", i))
        go.wait()
        cpu0 = _cpu()
        sent = 0
        if ctx.latency:
            _tight_timers()
            rate = RATE / ctx.producers
            n = int(rate * duration)
            pad = b"x" * (size - _STAMP.size)
            for k, due in paced(n, rate):
                # Every system's record carries its scheduled send time, not the moment send()
                # was called: a producer held up (a blocking call, a full queue, a late wake-up)
                # counts the delay in every record it made late, as a user waiting on a reading
                # sees it (no coordinated omission), and the same for every system.
                p.send(_STAMP.pack(due, k) + pad)
            sent = n
        else:
            chunk = [payload(size, k) for k in range(CHUNK)]
            deadline = time.monotonic() + duration
            if api == "batch":
                while time.monotonic() < deadline:
                    p.send_many(chunk)
                    sent += CHUNK
            else:
                send = p.send
                while time.monotonic() < deadline:
                    for x in chunk:
                        send(x)
                    sent += CHUNK
        p.flush()
        results.put(("p", i, sent, _cpu() - cpu0))
        p.close()
    except BaseException as e:
        results.put(("p", i, -1, f"{type(e).__name__}: {e}"))
        raise


def consumer_main(adapter: Any, ctx: Ctx, i: int, ready: Any, go: Any, go_ns: Any,
                  expected: Any, hard_deadline: float, results: Any) -> None:
    child_heap()
    try:
        c = adapter.consumer(ctx, i)
        ready.put(("c", i))
        go.wait()
        cpu0 = _cpu()
        count = 0
        nbytes = 0
        t_last = 0
        lat: list[int] = []
        unpack = _STAMP.unpack_from
        mono_ns = time.monotonic_ns
        while time.monotonic() < hard_deadline:
            msgs = c.recv(0.05)
            if msgs:
                now = mono_ns()
                t_last = now
                count += len(msgs)
                nbytes += sum(map(len, msgs))
                if ctx.latency:
                    lat += [now - unpack(m)[0] for m in msgs]
            exp = expected.value
            if exp > 0 and count >= exp:
                break
        results.put(("c", i, count, nbytes, t_last - go_ns.value, lat, _cpu() - cpu0))
        c.close()
    except BaseException as e:
        results.put(("c", i, -1, 0, 0, [], 0.0, f"{type(e).__name__}: {e}"))
        raise


# --- one case ------------------------------------------------------------------------------------
def pct(sorted_vals: list[int], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, int(q * len(sorted_vals)))
    return sorted_vals[k] / 1000.0  # ns -> us


def run_case(adapter: Any, system: str, api: str, size: int, producers: int, consumers: int,
             latency: bool, duration: float, supervisor: psutil.Process | None) -> dict[str, Any]:
    mpc = mp.get_context("fork")
    ctx = Ctx(system, producers, consumers, latency)
    adapter.setup(ctx)
    ready, results = mpc.Queue(), mpc.Queue()
    go = mpc.Event()
    go_ns = mpc.Value("q", 0)
    expected = mpc.Value("q", 0)
    hard = time.monotonic() + duration + 60
    before_fork()
    procs = [mpc.Process(target=consumer_main, args=(adapter, ctx, i, ready, go, go_ns, expected,
                                                     hard, results), daemon=True)
             for i in range(consumers)]
    for pr in procs:
        pr.start()
    for _ in range(consumers):  # consumers are positioned before any producer exists
        ready.get(timeout=60)
    prods = [mpc.Process(target=producer_main, args=(adapter, ctx, i, size, api, duration, ready,
                                                     go, results), daemon=True)
             for i in range(producers)]
    for pr in prods:
        pr.start()
    for _ in range(producers):
        ready.get(timeout=60)
    cpu0 = supervisor.cpu_times() if supervisor else None
    servers = _server_procs(adapter)
    server0 = _counters(servers) if servers else None
    time.sleep(0.05)
    go_ns.value = time.monotonic_ns()
    go.set()
    sent = 0
    producer_cpu = 0.0
    errors: list[str] = []
    got: list[tuple] = []
    for _ in range(producers):
        r = results.get(timeout=duration + 120)
        while r[0] == "c":  # a consumer that failed early
            got.append(r)
            r = results.get(timeout=duration + 120)
        if r[2] < 0:
            errors.append(r[3])
        else:
            sent += r[2]
            producer_cpu += r[3]
    expected.value = max(sent, 1)
    while len(got) < consumers:
        got.append(results.get(timeout=120))
    for pr in procs + prods:
        pr.join(30)
        if pr.is_alive():
            pr.kill()
    cpu1 = supervisor.cpu_times() if supervisor else None
    server1 = _counters(servers) if servers else None  # an exited relay is a zombie: still read
    adapter.teardown(ctx)
    delivered = [g[2] for g in got]
    errors += [g[7] for g in got if len(g) > 7]
    elapsed = max(g[4] for g in got) / 1e9 if got else float("nan")
    received = min(delivered) if delivered else 0
    row: dict[str, Any] = {
        "system": system, "api": api, "size": size, "topology": f"{producers}->{consumers}",
        "mode": "latency" if latency else "throughput", "sent": sent, "received": received,
        "seconds": round(elapsed, 3),
    }
    if errors:
        row["errors"] = errors[:3]
    if latency:
        lat = sorted(x for g in got for x in g[5][len(g[5]) // 10:])
        row.update(rate=RATE, p50_us=round(pct(lat, 0.50), 1), p99_us=round(pct(lat, 0.99), 1),
                   p999_us=round(pct(lat, 0.999), 1), samples=len(lat))
    else:
        mps = received / elapsed if elapsed > 0 else 0.0
        row.update(msgs_per_s=round(mps), mb_per_s=round(mps * size / 1e6, 1))
    # CPU of every process of the system (producers, consumers, server) per message sent.
    server_cpu = 0.0
    if server0 is not None and server1 is not None:
        server_cpu = server1["cpu"] - server0["cpu"]
        # How the server is woken: per message, its voluntary context switches (all threads)
        # and read/write-type system calls (/proc/PID/io), e.g. the relay's one read and one
        # write per message.
        for key in ("wakeups", "syscr", "syscw"):
            if server0[key] is not None and server1[key] is not None:
                row[f"server_{key}_per_msg"] = round((server1[key] - server0[key]) / max(sent, 1), 2)
    elif supervisor is not None and cpu0 is not None and cpu1 is not None:
        server_cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    consumer_cpu = sum(g[6] for g in got if len(g) > 6 and g[2] >= 0)
    row["cpu_us_per_msg"] = round((producer_cpu + consumer_cpu + server_cpu) / max(sent, 1) * 1e6, 1)
    # ... and each side's share (issue 16: where the time goes)
    for side, cpu_s in (("producer", producer_cpu), ("consumer", consumer_cpu), ("server", server_cpu)):
        row[f"cpu_us_{side}"] = round(cpu_s / max(sent, 1) * 1e6, 1)
    if elapsed > 0:
        row["server_cpu_percent"] = round(100 * server_cpu / elapsed, 1)
    if supervisor is not None and cpu0 is not None and cpu1 is not None:
        cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        row["supervisor_cpu_s"] = round(cpu, 3)
        row["supervisor_cpu_s_per_M"] = round(cpu / max(sent, 1) * 1e6, 2)
        row["supervisor_us_per_msg"] = round(cpu / max(sent, 1) * 1e6, 4)  # unrounded: --acl ratios
        row["supervisor_rss_mb"] = round(supervisor.memory_info().rss / 2**20, 1)
    return row


# --- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """`python -m bench`: the options, the peers and the report are bench/run_main.py's."""
    from bench.run_main import main as run_main

    return run_main(argv)


# --acl: ten rules of a gateway, one of which concerns the benchmark's own user (root), so that
# its connections take the per-connection decision cache instead of the "nothing applies" path.
ACL_RULES = [
    "deny user:root delete topic:protected.*",
    "allow user:mqtt-bridge write topic:sensors.*",
    "allow user:mqtt-bridge read topic:commands.*",
    "allow user:mqtt-bridge read group:mqtt-egress",
    "allow group:sensors read topic:sensors.*",
    "allow group:sensors read group:sensor-*",
    "allow user:replicator read topic:*",
    "allow user:* read,write topic:home.%u.*",
    "deny user:guest all topic:billing*",
    "allow node:gateway-7 all topic:gateway-7/*",
]


if __name__ == "__main__":
    sys.exit(main())
