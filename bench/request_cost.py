"""The supervisor's CPU per one-record PRODUCE, and per answer it pushes to a waiting consumer.

    python -m bench.request_cost [--rate 1000] [--requests 3000] [--rounds 5]
        [--transports shm,socket] [--base TREE] [--profile]

A real supervisor (edgebus.testing.EmbeddedBroker) and a producer that sends one 100-byte record
per request with `acks="written"`, `linger_ms=0`, and waits for its acknowledgement before the
next one, paced at `--rate` requests a second: the work per request is fixed (one frame in, one
append, one acknowledgement out), whatever the machine's load. Two cases per transport:
- `produce`: nobody reads the topic;
- `produce+answer`: a consumer (its own process) is caught up and waiting (a standing fetch on
  the shm rings, a parked FETCH on the socket), so every append also pushes an answer to it.
The figure is the supervisor's CPU for the requests (the scheduler's nanosecond accounting of all
its threads, /proc/PID/task/*/schedstat, as bench/acl_cpu.py), divided by their number: the
Python per request, its syscalls and the kernel's work they cause (wake-ups the supervisor
does, e.g. of the consumer, are billed to it). Its idle CPU over the same time (timers) is
measured before each count and reported separately (not subtracted).

`--inproc`: the same requests driven in-process instead (bench/request_inproc.py: the
supervisor's own entry points called directly, its thread's CPU time counted around them, no
loop wait or wake-up), steadier, for measuring changes to the Python; each count is a process
started in the checkout measured.

`--base TREE`: a second supervisor runs from another checkout (e.g. a worktree of the commit
before a change, with its C modules built), and every round runs both, alternating which goes
first, so that before/after are compared under the same load. `--profile` adds a py-spy sample of
this tree's supervisor (own time per function) during an extra round of each case.

Prints a table and writes bench/results/request-cost.json and .md (--out to change the stem).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.acl_cpu import _cpu_ns

RESULTS = Path(__file__).resolve().parent / "results"
HERE = Path(__file__).resolve().parent.parent
PAYLOAD = b"x" * 100


def _ctx_switches(pid: int) -> int:
    """Voluntary context switches of all the supervisor's threads (its sleeps: each is a
    wait in the selector, so roughly the wake-ups it needed)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def _minflt(pid: int) -> int:
    """Minor page faults of the whole process (/proc/PID/stat field 10): memory the kernel had
    to map on first touch, e.g. a receive buffer the heap gave back and took again."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[7])


def _consumer(sock: str, transport: str, topic: str, n: int, ready: Any, out: Any) -> None:
    """Read `n` records of `topic` from offset 0, one poll at a time (caught up: each append is
    answered on its own), and put how many arrived."""
    from edgebus import Consumer, TopicPartition

    with Consumer(socket=sock, transport=transport, enable_auto_commit=False,
                  auto_offset_reset="earliest", fetch_max_wait_ms=500) as c:
        c.assign([TopicPartition(topic, 0)])
        c.poll(50)  # attached, its fetch waiting at the log end
        ready.set()
        got = 0
        deadline = time.monotonic() + 120
        while got < n and time.monotonic() < deadline:
            got += sum(len(r) for r in c.poll(500).values())
    out.put(got)


def _produce(sock: str, transport: str, topic: str, n: int, rate: float) -> None:
    """`n` one-record requests, each waiting for its acknowledgement, paced at `rate`/s."""
    from edgebus import Producer

    with Producer(socket=sock, transport=transport, linger_ms=0, acks="written") as p:
        p.send(topic, PAYLOAD, partition=0).get(30)  # connected (and attached) before counting
        t0 = time.monotonic()
        for k in range(n):
            delay = t0 + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            p.send(topic, PAYLOAD, partition=0).get(30)


class Supervisor:
    """An EmbeddedBroker whose supervisor runs the edgebus of `tree` (its own C modules)."""

    def __init__(self, name: str, tree: Path) -> None:
        self.name = name
        self.tree = tree
        self.broker: Any = None

    def start(self) -> Supervisor:
        from edgebus.testing import EmbeddedBroker

        self.broker = EmbeddedBroker(log_level="WARNING")
        # `python -m` puts its working directory first on sys.path: start it from the tree.
        old = os.getcwd()
        os.chdir(self.tree)
        try:
            self.broker.start(env={"PYTHONPATH": str(self.tree)})
        finally:
            os.chdir(old)
        return self

    @property
    def pid(self) -> int:
        return int(self.broker.pid)

    def stop(self) -> None:
        self.broker.stop()
        self.broker.cleanup()


def one(sup: Supervisor, transport: str, case: str, requests: int, rate: float, n: int,
        spy_out: Path | None = None) -> dict[str, float]:
    """One count: the supervisor's CPU per request (us), its idle CPU (us/s) just before, and
    voluntary context switches per request."""
    from edgebus import Admin

    sock = sup.broker.socket
    topic = f"rc-{n}"
    with Admin(socket=sock, transport="socket") as a:
        a.create_topic(topic, 1)
    ctx = mp.get_context("fork")
    cons = None
    if case == "produce+answer":
        ready, out = ctx.Event(), ctx.Queue()
        cons = ctx.Process(target=_consumer,
                           args=(sock, transport, topic, requests + 1, ready, out))
        cons.start()
        if not ready.wait(60):
            raise RuntimeError("the consumer did not start")
    pid = sup.pid
    time.sleep(0.2)
    i0 = _cpu_ns(pid)
    time.sleep(0.5)
    idle = (_cpu_ns(pid) - i0) / 0.5 / 1e3  # us per second
    spy = None
    if spy_out is not None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        spy = subprocess.Popen([exe, "record", "-p", str(pid), "-r", "1000", "--nonblocking",
                                "-f", "raw", "-o", str(spy_out), "-d", str(int(requests / rate) + 2)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    c0, v0, f0, t0 = _cpu_ns(pid), _ctx_switches(pid), _minflt(pid), time.monotonic()
    _produce(sock, transport, topic, requests, rate)
    if cons is not None:
        got = out.get(timeout=120)
        cons.join(30)
        if got != requests + 1:
            raise RuntimeError(f"the consumer read {got} of {requests + 1} records")
    c1, v1, f1, t1 = _cpu_ns(pid), _ctx_switches(pid), _minflt(pid), time.monotonic()
    if spy is not None:
        spy.wait(60)
    with Admin(socket=sock, transport="socket") as a:
        a.delete_topic(topic)
    # The requests' own CPU: the count less the supervisor's idle rate over the same time
    # would be (c1 - c0 - idle * (t1 - t0)); both are reported, the difference is small.
    return {"us": (c1 - c0) / 1e3 / requests, "idle_us_s": idle,
            "vcs": (v1 - v0) / requests, "faults": (f1 - f0) / requests, "seconds": t1 - t0}


def one_inproc(tree: Path, transport: str, case: str, requests: int,
               profile: bool = False) -> dict[str, Any]:
    """bench/request_inproc.py in a process of its own, importing the edgebus of `tree`."""
    cmd = [sys.executable, str(Path(__file__).with_name("request_inproc.py")), transport, case,
           str(requests)] + (["profile"] if profile else [])
    # A script's own directory comes first on sys.path: put the tree before it.
    code = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); sys.argv.pop(0); "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code, str(tree), *cmd[1:]], cwd=tree,
                         capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.splitlines()[-1]))


def summarize_spy(path: Path, top: int = 25) -> list[str]:
    """Own time per function of a py-spy raw file, the idle wait left out."""
    from bench.hotspots import summarize

    return summarize(path, top)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--transports", default="shm,socket")
    ap.add_argument("--cases", default="produce,produce+answer")
    ap.add_argument("--base", type=Path, default=None,
                    help="another checkout to compare with (its supervisor runs its own code)")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy this tree's supervisor too (cProfile with --inproc)")
    ap.add_argument("--inproc", action="store_true",
                    help="drive the request path in-process (bench/request_inproc.py)")
    ap.add_argument("--out", default=None,
                    help="stem of the .json/.md written (default bench/results/request-cost, "
                         "request-cost-inproc with --inproc)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = str(RESULTS / ("request-cost-inproc" if args.inproc else "request-cost"))
    sups = [Supervisor("this", HERE)]
    if args.base is not None:
        sups.insert(0, Supervisor("base", args.base.resolve()))
    transports = args.transports.split(",")
    cases = args.cases.split(",")
    if not args.inproc:
        for s in sups:
            s.start()
    rows: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    n = 0
    profiles: dict[str, list[str]] = {}
    try:
        for r in range(args.rounds):
            for transport in transports:
                for case in cases:
                    order = sups if r % 2 == 0 else sups[::-1]
                    for s in order:
                        n += 1
                        if args.inproc:
                            got = one_inproc(s.tree, transport, case, args.requests)
                            got.update(vcs=0.0, idle_us_s=0.0)
                            print(f"round {r + 1} {s.name:4} {transport:6} {case:14}: "
                                  f"{got['us']:7.2f} us/request in-process (p10 "
                                  f"{got['p10_us']:.2f}, mean {got['mean_us']:.2f}), load {os.getloadavg()[0]:.1f}",
                                  flush=True)
                        else:
                            got = one(s, transport, case, args.requests, args.rate, n)
                            print(f"round {r + 1} {s.name:4} {transport:6} {case:14}: "
                                  f"{got['us']:7.1f} us/request, {got['vcs']:.2f} "
                                  f"sleeps/request, {got['faults']:.2f} page faults/request, "
                                  f"idle {got['idle_us_s']:.0f} us/s, load "
                                  f"{os.getloadavg()[0]:.1f}", flush=True)
                        rows.setdefault((s.name, transport, case), []).append(got)
        if args.profile and args.inproc:
            for transport in transports:
                for case in cases:
                    got = one_inproc(sups[-1].tree, transport, case, args.requests, True)
                    profiles[f"{transport} {case}"] = got["profile"].splitlines()
        elif args.profile:
            d = Path(tempfile.mkdtemp(prefix="ebrc-"))
            for transport in transports:
                for case in cases:
                    n += 1
                    path = d / f"{transport}-{case}.txt"
                    one(sups[-1], transport, case, args.requests, args.rate, n, path)
                    if path.exists():
                        profiles[f"{transport} {case}"] = summarize_spy(path)
    finally:
        if not args.inproc:
            for s in sups:
                s.stop()
    lines = ["| supervisor | transport | case | us/request (median) | min-max | sleeps/request | "
             "idle us/s |", "|---|---|---|---|---|---|---|"]
    summary = []
    for (name, transport, case), counts in rows.items():
        us = [g["us"] for g in counts]
        med = statistics.median(us)
        vcs = statistics.median(g["vcs"] for g in counts)
        idle = statistics.median(g["idle_us_s"] for g in counts)
        summary.append(dict(supervisor=name, transport=transport, case=case, us=round(med, 2),
                            rounds=[round(u, 2) for u in us], sleeps=round(vcs, 3),
                            idle_us_s=round(idle, 1)))
        lines.append(f"| {name} | {transport} | {case} | {med:.1f} | {min(us):.1f}-{max(us):.1f} "
                     f"| {vcs:.2f} | {idle:.0f} |")
    if args.base is not None:
        lines += ["", "| transport | case | this/base (medians) | single rounds this/base |",
                  "|---|---|---|---|"]
        for transport in transports:
            for case in cases:
                a = [g["us"] for g in rows[("this", transport, case)]]
                b = [g["us"] for g in rows[("base", transport, case)]]
                singles = sorted(x / y for x, y in zip(a, b, strict=True))
                lines.append(f"| {transport} | {case} | "
                             f"{statistics.median(a) / statistics.median(b):.3f} | "
                             f"{singles[0]:.3f}-{singles[-1]:.3f} |")
    commit = short_commit(HERE)
    base_commit = "" if args.base is None else short_commit(args.base)
    head = (f"`python -m bench.request_cost {' '.join(argv if argv is not None else sys.argv[1:])}`"
            f"; this tree at {commit}" + (f", base at {base_commit}" if base_commit else "")
            + (f"; {args.requests} requests per count in-process" if args.inproc else
               f"; {args.requests} requests per count at {args.rate:g}/s")
            + f", {args.rounds} rounds; "
            f"load average at the end {os.getloadavg()[0]:.2f} (2 cores, shared)")
    write_report(args.out, "Supervisor CPU per request", head, lines, summary, profiles,
                 "cProfile" if args.inproc else "py-spy", commit, base_commit)
    return 0


def short_commit(tree: Path | str) -> str:
    return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()


def write_report(out: str, title: str, head: str, lines: list[str], summary: Any,
                 profiles: dict[str, list[str]], prof_name: str, commit: str,
                 base_commit: str) -> None:
    """The report of request_cost and kafka_cost, printed and written to OUT.json and OUT.md: the
    command and conditions (head), the table (lines), each profile of this supervisor."""
    print("\n" + head + "\n\n" + "\n".join(lines))
    for k, v in profiles.items():
        print(f"\n{prof_name}, this supervisor, {k} (own time):\n" + "\n".join(v))
    report = dict(when=time.strftime("%Y-%m-%dT%H:%M:%S%z"), command=head, commit=commit,
                  base_commit=base_commit, loadavg=os.getloadavg(), summary=summary,
                  profiles=profiles)
    Path(out + ".json").write_text(json.dumps(report, indent=1))
    md = "\n\n".join([f"# {title} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
                       head, "\n".join(lines)]
                      + [f"{prof_name}, this supervisor, {k} (own time):\n\n```\n" + "\n".join(v)
                         + "\n```" for k, v in profiles.items()])
    Path(out + ".md").write_text(md + "\n")
    print(f"\nwrote {out}.json and .md")

if __name__ == "__main__":
    raise SystemExit(main())
