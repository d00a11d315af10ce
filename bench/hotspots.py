"""Where the time goes: one edgebus case with py-spy on the supervisor, a producer and a consumer.

    python -m bench.hotspots [--transport shm|socket] [--api batch|send] [--seconds 4] [--rate N]

Runs a producer and a consumer process against a fresh supervisor, samples all three with py-spy
(pip install -e '.[bench]'), and prints each process's CPU use and its functions by own time.
--rate N profiles the latency case instead: one record per send at N records/s, and also prints
each process's CPU microseconds per record.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil


def _producer(sock: str, transport: str, api: str, rate: float, stop: Any) -> None:
    from edgebus import Producer

    p = Producer(socket=sock, transport=transport, linger_ms=2 if api == "batch" and not rate else 0)
    vals = [b"x" * 100] * 1000
    if rate:  # the latency case: one record at a time at a fixed rate
        t0, k = time.monotonic(), 0
        while not stop.is_set():
            delay = t0 + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            p.send("prof", vals[0], partition=0)
            k += 1
        p.close(30)
        return
    while not stop.is_set():
        if api == "batch":
            p.send_batch("prof", vals, partition=0)
        else:
            for v in vals:
                p.send("prof", v, partition=0)
    p.close(30)


def _consumer(sock: str, transport: str, stop: Any, out: Any) -> None:
    from edgebus import Consumer, TopicPartition

    c = Consumer(socket=sock, transport=transport, fetch_max_wait_ms=100)
    tp = TopicPartition("prof", 0)
    c.assign([tp])
    c.seek_to_end(tp)
    n, t0 = 0, time.monotonic()
    while not stop.is_set():
        for recs in c.poll(50, max_records=1_000_000).values():
            n += len(recs)
    out.put(n / (time.monotonic() - t0))
    c.close()


def summarize(path: Path, top: int = 15) -> list[str]:
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        leaf = stack.split(";")[-1]
        own[leaf.split(" (")[0] + " " + leaf.rsplit("/", 1)[-1].rstrip(")")] += n
    return [f"  {c / max(total, 1):6.1%} {k}" for k, c in own.most_common(top)]


def share(path: Path, needles: list[str]) -> float:
    """The fraction of samples whose stack holds a frame naming any of `needles` (inclusive
    time: the function and what it calls)."""
    hit = total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        if any(n in stack for n in needles):
            hit += int(count)
    return hit / max(total, 1)


# Access control's own frames. Not Dispatcher._produce_checked: its samples include the produce
# handler it calls; and the in-place cache test of dispatch_frame has no frame of its own.
ACL_FRAMES = ["Authorizer.", "edgebus/server/acl/"]


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hotspots")
    ap.add_argument("--transport", default="shm", choices=["shm", "socket"])
    ap.add_argument("--api", default="batch", choices=["batch", "send"])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rate", type=float, default=0.0, help="records/s, one per send (latency case)")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--no-spy", action="store_true",
                    help="no profiler: only CPU (user/system) per process, undisturbed")
    ap.add_argument("--hz", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--acl", choices=["off", "owner", "rules"], default="owner",
                    help="access control: off (acl.enabled: false), owner (the default policy, "
                         "no rules) or rules (the ten rules of python -m bench --acl)")
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    from bench.run import ACL_RULES
    from edgebus import Admin
    from edgebus.testing import EmbeddedBroker

    out_dir = Path(tempfile.mkdtemp(prefix="ebprof-"))
    acl = {"off": {"enabled": False}, "owner": {}, "rules": {"rules": ACL_RULES}}[args.acl]
    with EmbeddedBroker(log_level="WARNING", config={"acl": acl}) as b:
        with Admin(socket=b.socket, transport="socket") as a:
            a.create_topic("prof", 1)
        ctx = mp.get_context("fork")
        stop, rate = ctx.Event(), ctx.Queue()
        cons = ctx.Process(target=_consumer, args=(b.socket, args.transport, stop, rate))
        cons.start()
        time.sleep(0.5)
        prod = ctx.Process(target=_producer, args=(b.socket, args.transport, args.api, args.rate, stop))
        prod.start()
        time.sleep(1.0)
        pids = {"supervisor": b.pid, "producer": prod.pid, "consumer": cons.pid}
        spies = [] if args.no_spy else [
            subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(int(args.seconds)), "-r", str(args.hz),
                              "--nonblocking", "-f", "raw", "-o", str(out_dir / f"{name}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, pid in pids.items()]
        procs = {n: psutil.Process(p) for n, p in pids.items()}
        t0 = {n: p.cpu_times()[:2] for n, p in procs.items()}
        time.sleep(args.seconds)
        t1 = {n: p.cpu_times()[:2] for n, p in procs.items()}
        for s in spies:
            s.wait()
        stop.set()
        print(f"consumer rate{'' if args.no_spy else ' (sampled by py-spy, so slower)'}: "
              f"{rate.get(timeout=60):,.0f} rec/s")
        cons.join(30)
        prod.join(30)
    for name in pids:
        user, system = (t1[name][i] - t0[name][i] for i in (0, 1))
        cores = (user + system) / args.seconds
        per = ""
        if args.rate:
            n = args.rate * args.seconds
            per = f", {(user + system) * 1e6 / n:.1f} us CPU per record (user {user * 1e6 / n:.1f}, " \
                  f"system {system * 1e6 / n:.1f})"
        print(f"\n{name}: {cores:.2f} cores{per}" + ("" if args.no_spy else "; own time:"))
        path = out_dir / f"{name}.txt"
        if not args.no_spy:
            print("\n".join(summarize(path, args.top)) if path.exists() else "  (py-spy not available)")
            if name == "supervisor" and path.exists() and args.acl != "off":
                print(f"  access control (frames of edgebus/server/acl/, inclusive): "
                      f"{share(path, ACL_FRAMES):.2%} of the supervisor's samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
