"""The supervisor's CPU per Kafka request and per Kafka record, driven by librdkafka.

    python -m bench.kafka_cost [--cases request,request+fetch,records] [--rounds 3]
        [--requests 2000] [--rate 1000] [--records 300000] [--size 100] [--base TREE] [--profile]

A real supervisor (edgebus.testing.EmbeddedBroker, its Kafka listener on a free port) and
confluent-kafka clients in processes of their own. Cases:
- `request`: one 100-byte record per Produce request (acks=1, linger 0, the producer waits for
  each answer: `flush()`), paced at `--rate`/s; nobody reads. The work per request is fixed.
- `request+fetch`: the same with a caught-up confluent-kafka consumer (fetch.wait.max.ms 500),
  so every append also answers a parked Fetch.
- `records`: `--records` records of `--size` bytes produced as fast as librdkafka batches them
  (acks=1, linger 5 ms) and read by one consumer: the throughput path, per record.
The figure is the supervisor's CPU (the scheduler's nanosecond accounting of all its threads,
/proc/PID/task/*/schedstat) per request or per record: load moves it far less than wall-clock
rates. `--base TREE` runs a second supervisor from another checkout (its C module built) and
alternates the two in every round; `--profile` adds a py-spy sample of this tree's supervisor per
case. Writes bench/results/kafka-cost.json and .md (`--out` to change the stem).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.acl_cpu import _cpu_ns
from bench.request_cost import (
    HERE,
    RESULTS,
    Supervisor,
    short_commit,
    summarize_spy,
    write_report,
)

CLIENT = {"socket.nagle.disable": True}


def _consumer(boot: str, topic: str, n: int, ready: Any, out: Any) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": boot, "group.id": f"kc-{topic}", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 500, "fetch.message.max.bytes": 4 << 20, **CLIENT})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    # Connected, the warm-up record read, its fetch parked at the log end.
    got = sum(1 for m in c.consume(1, 10.0) if m.error() is None)
    ready.set()
    deadline = time.monotonic() + 300
    while got < n and time.monotonic() < deadline:
        got += sum(1 for m in c.consume(10_000, 0.5) if m.error() is None)
    c.close()
    out.put(got)


def _produce(boot: str, topic: str, case: str, n: int, rate: float, size: int) -> None:
    from confluent_kafka import Producer

    one = case != "records"
    p = Producer({"bootstrap.servers": boot, "acks": 1, "linger.ms": 0 if one else 5,
                  "queue.buffering.max.messages": 1_000_000, **CLIENT})
    payload = b"x" * size
    if one:
        t0 = time.monotonic()
        for k in range(n):
            delay = t0 + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            p.produce(topic, payload, partition=0)
            p.flush(30)  # its answer: one record per request
    else:
        for _ in range(n):
            while True:
                try:
                    p.produce(topic, payload, partition=0)
                    break
                except BufferError:
                    p.poll(0.01)
        p.flush(120)


def one(sup: Supervisor, case: str, n: int, rate: float, size: int, k: int,
        spy_out: Path | None = None) -> dict[str, float]:
    """One count: the supervisor's CPU per request or record (us)."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    boot = sup.broker.kafka_bootstrap
    topic = f"kc-{os.getpid()}-{k}"
    ac = AdminClient({"bootstrap.servers": boot})  # kept: its futures need the handle alive
    ac.create_topics([NewTopic(topic, 1, config={"max.message.bytes": str(4 << 20)})])[topic].result(30)
    warm = Producer({"bootstrap.servers": boot, **CLIENT})  # the listener's first-use imports
    warm.produce(topic, b"w", partition=0)
    warm.flush(30)
    ctx = mp.get_context("fork")
    cons = None
    if case != "request":
        ready, out = ctx.Event(), ctx.Queue()
        cons = ctx.Process(target=_consumer, args=(boot, topic, n + 1, ready, out))
        cons.start()
        if not ready.wait(60):
            raise RuntimeError("the consumer did not start")
    prod = ctx.Process(target=_produce, args=(boot, topic, case, n, rate, size))
    pid = sup.pid
    time.sleep(0.3)
    spy = None
    if spy_out is not None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        dur = int(n / rate) + 30
        spy = subprocess.Popen([exe, "record", "-p", str(pid), "-r", "500", "--nonblocking",
                                "-f", "raw", "-o", str(spy_out), "-d", str(dur)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    c0, t0, u0 = _cpu_ns(pid), time.monotonic(), _user_system(pid)
    prod.start()
    prod.join(600)
    if cons is not None:
        got = out.get(timeout=300)
        cons.join(30)
        if got < n + 1:
            raise RuntimeError(f"the consumer read {got} of {n + 1} records")
    c1, t1, u1 = _cpu_ns(pid), time.monotonic(), _user_system(pid)
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it has sampled, then exits
        spy.wait(60)
    ac.delete_topics([topic])[topic].result(30)
    ticks = (u1[0] - u0[0]) + (u1[1] - u0[1])
    return {"us": (c1 - c0) / 1e3 / n, "seconds": t1 - t0, "per_s": n / (t1 - t0),
            "system_share": (u1[1] - u0[1]) / ticks if ticks else 0.0}


def _user_system(pid: int) -> tuple[int, int]:
    """The supervisor's user and system clock ticks (/proc/PID/stat fields 14, 15): how much
    of its CPU is the kernel's (socket and file system calls) rather than Python's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="request,request+fetch,records")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--base", type=Path, default=None,
                    help="another checkout to compare with (its supervisor runs its own code)")
    ap.add_argument("--profile", action="store_true", help="py-spy this tree's supervisor too")
    ap.add_argument("--tree", type=Path, default=HERE,
                    help="the checkout 'this' supervisor runs (default: this one)")
    ap.add_argument("--out", default=str(RESULTS / "kafka-cost"))
    args = ap.parse_args(argv)
    sups = [Supervisor("this", args.tree.resolve())]
    if args.base is not None:
        sups.insert(0, Supervisor("base", args.base.resolve()))
    cases = args.cases.split(",")
    for s in sups:
        s.start()
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    profiles: dict[str, list[str]] = {}
    k = 0
    try:
        for r in range(args.rounds):
            for case in cases:
                n = args.records if case == "records" else args.requests
                for s in (sups if r % 2 == 0 else sups[::-1]):
                    k += 1
                    got = one(s, case, n, args.rate, args.size, k)
                    unit = "record" if case == "records" else "request"
                    print(f"round {r + 1} {s.name:4} {case:14}: {got['us']:7.2f} us/{unit} "
                          f"({got['per_s']:,.0f}/s, {100 * got['system_share']:.0f}% in the "
                          f"kernel), load {os.getloadavg()[0]:.1f}", flush=True)
                    rows.setdefault((s.name, case), []).append(got)
        if args.profile:
            d = Path(tempfile.mkdtemp(prefix="ebkc-"))
            for case in cases:
                k += 1
                n = args.records if case == "records" else args.requests
                path = d / f"{case}.txt"
                one(sups[-1], case, n, args.rate, args.size, k, path)
                if path.exists():
                    profiles[case] = summarize_spy(path)
    finally:
        for s in sups:
            s.stop()
    lines = ["| supervisor | case | us (median) | per | min-max | rate /s (median) | kernel share |",
             "|---|---|---|---|---|---|---|"]
    summary = []
    for (name, case), counts in rows.items():
        us = [g["us"] for g in counts]
        med = statistics.median(us)
        per = "record" if case == "records" else "request"
        rate = statistics.median(g["per_s"] for g in counts)
        sys_share = statistics.median(g["system_share"] for g in counts)
        summary.append(dict(supervisor=name, case=case, us=round(med, 3), per=per,
                            rounds=[round(u, 3) for u in us], rate=round(rate),
                            system_share=round(sys_share, 3)))
        lines.append(f"| {name} | {case} | {med:.2f} | {per} | {min(us):.2f}-{max(us):.2f} | "
                     f"{rate:,.0f} | {100 * sys_share:.0f}% |")
    if args.base is not None:
        lines += ["", "| case | this/base (medians) | single rounds this/base |", "|---|---|---|"]
        for case in cases:
            a = [g["us"] for g in rows[("this", case)]]
            b = [g["us"] for g in rows[("base", case)]]
            singles = sorted(x / y for x, y in zip(a, b, strict=True))
            lines.append(f"| {case} | {statistics.median(a) / statistics.median(b):.3f} | "
                         f"{singles[0]:.3f}-{singles[-1]:.3f} |")

    commit = short_commit(args.tree)
    base_commit = "" if args.base is None else short_commit(args.base)
    head = (f"`python -m bench.kafka_cost {' '.join(argv if argv is not None else sys.argv[1:])}`"
            f"; this tree at {commit}" + (f", base at {base_commit}" if base_commit else "")
            + f"; {args.requests} requests at {args.rate:g}/s, {args.records} records of "
            f"{args.size} B, {args.rounds} rounds; load average at the end "
            f"{os.getloadavg()[0]:.2f} (2 cores, shared)")
    write_report(args.out, "Supervisor CPU per Kafka request and record", head, lines, summary,
                 profiles, "py-spy", commit, base_commit)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
