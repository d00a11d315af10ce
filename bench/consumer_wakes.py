"""A paced consumer's CPU per message split into wake-ups per message and CPU per wake-up, with
several trees alternated, and optionally each tree's consumer against each tree's supervisor and
producer (issue 16: why the consumer's CPU per message moves between trees).

    python -m bench.consumer_wakes [--trees .,../base] [--rate 10000] [--duration 3]
                                   [--rounds 3] [--transports shm,socket] [--swap]
                                   [--spinners 0,2] [--out FILE.md]

One supervisor (EmbeddedBroker) and one producer `send()` (linger_ms=0, acks="written", 100-byte
records at --rate) run from one tree; one consumer with the paced benchmark's settings
(bench/clients.py `tail_consumer`, `poll(50)`) runs in a process of its own from the same tree,
or with --swap from every tree in turn (the consumer's code and the rest's code crossed). Per
message: the consumer's CPU (all threads, /proc schedstat), its wake-ups (voluntary context
switches) and so its CPU per wake-up, the share of it in the kernel (/proc stat utime/stime,
clock ticks: rough), the producer's requests per record, the producer's and supervisor's CPU,
the p50 latency from each record's scheduled send time. Each case is its own process with
the edgebus of the tree it runs (bench/trees.py), the order reversed every other round.

--spinners 0,2 runs every case once per count, alternated: with K processes spinning at
SCHED_IDLE (they run only when nothing else wants a CPU, so they take no CPU from the measured
processes, but the CPUs never go idle: no halt of the virtual CPU, no idle state that lets the
caches go cold between the consumer's wake-ups). A consumer whose CPU per wake-up drops with
them pays for waking on an idle CPU, not for its own work.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.paced_pair import (
    PacedPair,
    latencies,
    new_topic,
    thread_counters,
)

HERE = Path(__file__).resolve()
TREE = HERE.parents[1]


def _cpu(pid: int) -> tuple[int, int, int, int]:
    """(CPU ns of all threads, voluntary switches, user ticks, system ticks) of pid."""
    threads = thread_counters(pid).values()
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (sum(t[0] for t in threads), sum(t[1] for t in threads), int(fields[11]),
            int(fields[12]))


def consumer(sock: str, transport: str, topic: str, n: int) -> None:
    """The consumer process (`--consumer`): says ready, takes n records, prints their p50."""
    from bench.clients import tail_consumer

    c = tail_consumer(sock, transport, topic)
    print("ready", flush=True)
    got, lat = 0, []
    hard = time.monotonic() + 120
    while got < n and time.monotonic() < hard:
        for recs in c.poll(50, max_records=1_000_000).values():
            now = time.monotonic_ns()
            mine = latencies(recs, now)
            got += len(mine)
            lat += mine
    lat.sort()
    print(f"done {got} {lat[len(lat) // 2] / 1000 if lat else -1}", flush=True)
    sys.stdin.readline()
    c.close()


def one(transport: str, consumer_tree: str, rate: int, duration: float) -> dict[str, Any]:
    """One case: supervisor and producer from this process's tree, the consumer from
    consumer_tree's."""
    from bench.trees import tree_env
    from edgebus.testing import EmbeddedBroker

    n = int(rate * duration)
    broker = EmbeddedBroker(log_level="WARNING").start()
    stack = ExitStack()  # the consumer's tree_env, until the consumer is gone
    try:
        topic = new_topic(broker.socket, "wakes")
        cons = subprocess.Popen(
            [sys.executable, str(HERE), "--consumer", f"{broker.socket}|{transport}|{topic}|{n}"],
            env=stack.enter_context(tree_env(consumer_tree)), cwd=consumer_tree,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert cons.stdin is not None and cons.stdout is not None
        if cons.stdout.readline().strip() != "ready":
            raise RuntimeError("the consumer did not start")
        pair = PacedPair(broker.socket, transport, topic, rate, n, consumer=None)
        assert broker.pid is not None
        pids = {"producer": pair.pids["p"], "supervisor": broker.pid, "consumer": cons.pid}
        before = {k: _cpu(p) for k, p in pids.items()}
        load = os.getloadavg()[0]
        requests = pair.run(duration + 180)["p"][2]  # go; the producer then waits for done
        line = cons.stdout.readline().split()
        after = {k: _cpu(p) for k, p in pids.items()}
        cons.stdin.write("bye\n")
        cons.stdin.flush()
        cons.wait(30)
        pair.close()
    finally:
        broker.stop()
        broker.cleanup()
        stack.close()
    d = {k: [y - x for x, y in zip(before[k], after[k], strict=True)] for k in pids}
    ns, wakes, ut, st = d["consumer"]
    return {"transport": transport, "load": load, "received": int(line[1]),
            "p50_us": float(line[2]), "requests_per_record": requests,
            "consumer_us": ns / 1000 / n, "wakeups": wakes / n,
            "us_per_wakeup": ns / 1000 / max(wakes, 1), "kernel_share": st / max(ut + st, 1),
            "producer_us": d["producer"][0] / 1000 / n,
            "supervisor_us": d["supervisor"][0] / 1000 / n}


def _spin() -> None:
    """A spinner at SCHED_IDLE (--spinners): keeps a CPU busy only while it would be idle."""
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    while True:
        pass


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.consumer_wakes",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--trees", default=".", help="checkouts, comma-separated (each built)")
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--transports", default="shm,socket")
    ap.add_argument("--swap", action="store_true",
                    help="every tree's consumer against every tree's supervisor and producer")
    ap.add_argument("--spinners", default="0",
                    help="counts of SCHED_IDLE spinners, each case run once per count")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)
    ap.add_argument("--consumer", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    if a.consumer:
        sock, transport, topic, n = a.consumer.split("|")
        consumer(sock, transport, topic, int(n))
        return
    if a.one:
        transport, consumer_tree = a.one.split("|")
        print(json.dumps(one(transport, consumer_tree, a.rate, a.duration)))
        return
    from bench.trees import commit, run_case

    trees = [Path(t).resolve() for t in a.trees.split(",")]
    # Each tree named once, at the start (a commit made meanwhile must not split its rows).
    names = {t: f"{t.name} ({commit(t)})" for t in trees}
    pairs = [(s, c) for s in trees for c in trees] if a.swap else [(t, t) for t in trees]
    spinners = [int(k) for k in a.spinners.split(",")]
    rows = []
    for rnd in range(a.rounds):
        cases = [(tr, s, c, k) for tr in a.transports.split(",") for s, c in pairs
                 for k in spinners]
        if rnd % 2:
            cases.reverse()  # drift in the machine's load touches all alike
        for tr, s, c, k in cases:
            cmd = [sys.executable, str(HERE), "--one", f"{tr}|{c}", "--rate", str(a.rate),
                   "--duration", str(a.duration)]
            spin = [mp.get_context("fork").Process(target=_spin, daemon=True) for _ in range(k)]
            for sp in spin:
                sp.start()
            try:
                r = run_case(s, cmd)
            finally:
                for sp in spin:
                    sp.kill()
                    sp.join()
            r.update(round=rnd, server=names[s], consumer=names[c], spinners=k)
            rows.append(r)
            print(f"  round {rnd} {tr:6} server {r['server']} consumer {r['consumer']} "
                  f"spinners {k} "
                  f"{r['consumer_us']:.1f} us/msg, {r['wakeups']:.2f} wake-ups/msg, "
                  f"{r['us_per_wakeup']:.1f} us/wake-up, p50 {r['p50_us']:.0f} us, "
                  f"load {r['load']:.1f}", flush=True)
    md = render(rows, a)
    print("\n".join(md))
    if a.out:
        Path(a.out).write_text("\n".join(md) + "\n")


def render(rows: list[dict[str, Any]], a: argparse.Namespace) -> list[str]:
    md = [f"# issue 16: the consumer's wake-ups and CPU per wake-up, "
          f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}", "",
          f"`python -m bench.consumer_wakes --trees {a.trees} --rate {a.rate} --duration "
          f"{a.duration} --rounds {a.rounds} --transports {a.transports}"
          + (" --swap" if a.swap else "") + f" --spinners {a.spinners}`", "",
          "Per message: consumer CPU us (all threads), its wake-ups, its CPU per wake-up, the "
          "kernel's share of its CPU (clock ticks: rough), the producer's requests per record, "
          "p50 us from the scheduled send time. `server` runs the supervisor and the producer, "
          "`consumer` the consumer process; `spinners`: SCHED_IDLE spinning processes during the case.", "",
          "| round | transport | server | consumer | spinners | load | consumer us | wake-ups | us / wake-up "
          "| kernel share | requests / record | producer us | supervisor us | p50 us |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['round']} | {r['transport']} | {r['server']} | {r['consumer']} | "
                  f"{r['spinners']} | "
                  f"{r['load']:.1f} | {r['consumer_us']:.1f} | {r['wakeups']:.2f} | "
                  f"{r['us_per_wakeup']:.1f} | {r['kernel_share']:.2f} | "
                  f"{r['requests_per_record']:.2f} | {r['producer_us']:.1f} | "
                  f"{r['supervisor_us']:.1f} | {r['p50_us']:.0f} |")
    md += ["", "Medians over the rounds:", "",
           "| transport | server | consumer | spinners | consumer us | wake-ups | us / wake-up | kernel share "
           "| requests / record | producer us | supervisor us | p50 us |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["transport"], r["server"], r["consumer"], r["spinners"]) for r in rows})
    for key in keys:
        rs = [r for r in rows
              if (r["transport"], r["server"], r["consumer"], r["spinners"]) == key]

        def med(k: str, rs: list[dict[str, Any]] = rs) -> float:
            return statistics.median(r[k] for r in rs)

        md.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {med('consumer_us'):.1f} | "
                  f"{med('wakeups'):.2f} | {med('us_per_wakeup'):.1f} | "
                  f"{med('kernel_share'):.2f} | {med('requests_per_record'):.2f} | "
                  f"{med('producer_us'):.1f} | {med('supervisor_us'):.1f} | {med('p50_us'):.0f} |")
    return md


if __name__ == "__main__":
    main()
