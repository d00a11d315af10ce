"""Wake-ups, CPU and system calls per message, per process and per thread, at a paced rate
(issue 16: what each of producer, supervisor and consumer does per message at 1,000/s).

    python -m bench.wakeups [--rate 1000] [--duration 4] [--transports shm,socket] [--rounds 2]
                            [--base TREE] [--no-syscalls] [--out FILE.md]

One supervisor (EmbeddedBroker), one producer `send()` (linger_ms=0, acks="written"), one consumer
with the paced benchmark's settings (bench/peers.py `Edgebus`), 100-byte records at a fixed rate.
For each process, and each thread of the clients: CPU from /proc/PID/task/*/schedstat (ns, all
threads) and voluntary context switches (a thread that blocked and was woken: one wake-up each),
per message. Counts do not depend on the machine's load the way CPU does. System calls per
message by name, all threads: `perf stat` on the kernel's syscall tracepoints, attached to each
process (`strace -c` was tried first: ptrace stops every call, and the processes it slows batch
differently, so its counts were not those of the untraced run).
With --base TREE (another checkout, e.g. `git worktree add --detach ../base main` with its C
modules copied or built), each round runs TREE's code too, alternated with this checkout's.

Each case is a child process (`--one`) importing the edgebus of the tree it measures, so the
supervisor and the clients are that tree's code, and this checkout's benchmark code
(bench/trees.py, bench/paced_pair.py: the same for both trees).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.paced_pair import PacedPair, new_topic, thread_counters, threads_since

HERE = Path(__file__).resolve()
TREE = HERE.parents[1]


# The calls a message's path makes, counted by the kernel's tracepoints (perf stat): unlike
# strace (ptrace stops every call) this leaves the processes' timing and batching as they are.
SYSCALLS = ("read", "write", "epoll_wait", "epoll_ctl", "poll", "ppoll", "pselect6", "select", "futex",
            "recvfrom", "sendto", "recvmsg", "sendmsg", "ioctl", "clock_nanosleep", "sched_yield",
            "pread64", "pwrite64", "openat", "close", "fsync", "fdatasync", "getpid")


def _perf(pid: int, out: str) -> subprocess.Popen[bytes]:
    events = ",".join(["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{c}" for c in SYSCALLS])
    # --per-thread: which thread makes the calls (a client's sender, reader or I/O thread)
    return subprocess.Popen(["perf", "stat", "--per-thread", "-x", ",", "-o", out, "-e", events,
                             "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _perf_counts(path: str) -> tuple[dict[str, int], dict[int, dict[str, int]]]:
    """The calls of all threads by name ("all": every call), and the same per thread id."""
    counts: dict[str, int] = {}
    per: dict[int, dict[str, int]] = {}
    with open(path) as f:
        for line in f:
            parts = line.strip().split(",")  # comm-tid,count,unit,event,...
            if len(parts) > 3 and parts[1].isdigit() and "-" in parts[0]:
                name = parts[3].split(":")[-1].removeprefix("sys_enter_")
                name = "all" if name == "sys_enter" else name
                tid = int(parts[0].rsplit("-", 1)[1])
                counts[name] = counts.get(name, 0) + int(parts[1])
                per.setdefault(tid, {})[name] = int(parts[1])
    return counts, per


def _callgrind(pid: int, *args: str) -> None:
    r = subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, text=True,
                       timeout=300, check=False)
    if r.returncode != 0 or "OK" not in r.stdout:
        raise RuntimeError(f"callgrind_control {' '.join(args)} {pid}: {r.stdout}{r.stderr}")


def _instructions(prefix: str) -> int:
    """The instructions of the `--dump=paced` of a callgrind run (the summary line)."""
    for f in Path(prefix).parent.glob(Path(prefix).name + ".*"):
        text = f.read_text(errors="replace")
        if "Trigger: dump paced" in text:
            for line in text.splitlines():
                if line.startswith(("summary: ", "totals: ")):
                    return int(line.split()[1])
    raise RuntimeError(f"no callgrind dump 'paced' under {prefix}")


def one(transport: str, rate: int, duration: float, syscalls: bool,
        calls: bool = False, instructions: bool = False) -> dict[str, Any]:
    """One case in this process's tree: counters per process and thread, per message."""
    from edgebus.testing import EmbeddedBroker

    n = int(rate * duration)
    counted = tempfile.mktemp(prefix="wakeups-calls-") if calls else ""
    wrapper = [sys.executable, str(HERE.parent / "callcount.py"), counted] if calls else []
    grind = tempfile.mktemp(prefix="wakeups-callgrind-") if instructions else ""
    if instructions:  # every instruction the supervisor executes, whatever the machine's load
        wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={grind}", "--vgdb=yes"]
    broker = EmbeddedBroker(log_level="WARNING", wrapper=wrapper).start(
        timeout=600 if instructions else 30)
    try:
        topic = new_topic(broker.socket, "wakeups")
        pair = PacedPair(broker.socket, transport, topic, rate, n)
        assert broker.pid is not None
        pids = {"producer": pair.pids["p"], "supervisor": broker.pid, "consumer": pair.pids["c"]}
        tracers, files = {}, {}
        if syscalls:
            for role, pid in pids.items():
                files[role] = tempfile.mktemp(prefix=f"wakeups-{role}-")
                tracers[role] = _perf(pid, files[role])
            time.sleep(0.5)  # attached
        before = {role: thread_counters(pid) for role, pid in pids.items()}
        load = os.getloadavg()[0]
        if calls:
            Path(counted + ".start").touch()
        if instructions:
            _callgrind(int(broker.pid), "--zero")
        got = pair.run(duration + 180)
        after = {role: thread_counters(pid) for role, pid in pids.items()}
        if calls:
            Path(counted + ".stop").touch()
        if instructions:
            _callgrind(int(broker.pid), "--dump=paced")
        for t in tracers.values():
            t.send_signal(signal.SIGINT)
        for t in tracers.values():
            t.wait(30)
        pair.close()
    finally:
        broker.stop()
        broker.cleanup()
    names = {**got["p"][1], **got["c"][3]}
    out: dict[str, Any] = {"transport": transport, "rate": rate, "sent": n,
                           "received": got["c"][1], "p50_us": got["c"][2], "p99_us": got["c"][4], "load": load,
                           "requests_per_record": got["p"][2],
                           "procs": {}, "calls": {}, "instructions": 0.0}
    if instructions:
        out["instructions"] = _instructions(grind) / n
        for f in Path(grind).parent.glob(Path(grind).name + "*"):
            f.unlink()
    if calls:
        out["calls"] = {k: v / n for k, v in json.loads(Path(counted).read_text())["calls"].items()}
        for name in (counted, counted + ".start", counted + ".stop"):
            os.unlink(name)
    for role, pid in pids.items():
        d = threads_since(before[role], after[role])
        sc, sc_tid = _perf_counts(files[role]) if syscalls else ({}, {})
        if syscalls:
            os.unlink(files[role])
        tsc: dict[str, dict[str, float]] = {}
        for tid, c in sc_tid.items():
            name = "main" if tid == pid else ("helper" if role == "supervisor"
                                              else names.get(tid, "other"))
            acc_sc = tsc.setdefault(name, {})
            for k, v in c.items():
                acc_sc[k] = acc_sc.get(k, 0.0) + v / n
        threads: dict[str, list[int]] = {}
        for tid, (ns, vol, invol) in sorted(d.items()):
            name = "main" if tid == pid else names.get(tid, "other")
            if role == "supervisor":
                name = "main" if tid == pid else "helper"
            acc = threads.setdefault(name, [0, 0, 0])
            acc[0] += ns
            acc[1] += vol
            acc[2] += invol
        out["procs"][role] = {
            "cpu_us": sum(v[0] for v in d.values()) / 1000 / n,
            "threads": {k: {"cpu_us": v[0] / 1000 / n, "wakeups": v[1] / n, "preempted": v[2] / n,
                            "syscalls": tsc.get(k, {})}
                        for k, v in threads.items()},
            "syscalls": {k: c / n for k, c in sc.items()},
        }
    return out


# --- rounds, alternated --------------------------------------------------------------------------
def _run_child(tree: Path, transport: str, a: argparse.Namespace) -> dict[str, Any]:
    from bench.trees import run_case  # here: a --base tree's bench/ may lack it

    cmd = [sys.executable, str(HERE), "--one", transport, "--rate", str(a.rate), "--duration",
           str(a.duration)] + (["--no-syscalls"] if a.no_syscalls else []) + (
               ["--calls"] if a.calls else []) + (["--instructions"] if a.instructions else [])
    return run_case(tree, cmd)


def render(rows: list[dict[str, Any]], a: argparse.Namespace, trees: dict[str, Path]) -> list[str]:
    from bench.trees import commit

    md = [f"# issue 16: wake-ups and system calls per message, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}",
          "", f"`python -m bench.wakeups --rate {a.rate} --duration {a.duration} --transports "
          f"{a.transports} --rounds {a.rounds}" + (f" --base {a.base}" if a.base else "")
          + (" --no-syscalls" if a.no_syscalls else "") + (" --calls" if a.calls else "")
          + (" --instructions" if a.instructions else "") + "`", "",
          "Trees: " + ", ".join(f"{k} = {v} ({commit(v)})" for k, v in trees.items())
          + f"; {os.cpu_count()} CPUs. Load average (1 min) per case in the table: a shared "
          "machine, so CPU figures are noisy; counts (wake-ups = voluntary context switches, "
          "system calls) much less so.", "",
          "Per message: CPU us of the process (all threads); per thread: voluntary context "
          "switches (wake-ups) / involuntary (preemptions) / CPU us.", "",
          "`requests / record`: the producer's PRODUCE requests per record (below 1: records "
          "held back into batches while the supervisor had not read the last requests).", "",
          "| round | tree | transport | load | p50 us | p99 us | requests / record | producer us "
          "| supervisor us | consumer us | all us | producer threads | supervisor threads "
          "| consumer threads |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def th(p: dict[str, Any]) -> str:
        return "; ".join(f"{k} {v['wakeups']:.2f}/{v['preempted']:.2f}/{v['cpu_us']:.0f}"
                         for k, v in p["threads"].items())

    for r in rows:
        pr = r["procs"]
        md.append(f"| {r['round']} | {r['tree']} | {r['transport']} | {r['load']:.1f} | "
                  f"{r['p50_us']:.0f} | {r.get('p99_us', -1):.0f} | "
                  f"{r.get('requests_per_record', -1):.2f} | " + " | ".join(f"{pr[k]['cpu_us']:.1f}" for k in
                                                     ("producer", "supervisor", "consumer"))
                  + f" | {sum(pr[k]['cpu_us'] for k in pr):.1f} | "
                  + " | ".join(th(pr[k]) for k in ("producer", "supervisor", "consumer")) + " |")
    md += ["", "Medians over the rounds (CPU us per message; wake-ups per message, all threads):",
           "", "| tree | transport | producer | supervisor | consumer | all | producer wake-ups "
           "| supervisor wake-ups | consumer wake-ups | supervisor % of a core |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["tree"], r["transport"]) for r in rows})
    for tree, tr in keys:
        rs = [r for r in rows if (r["tree"], r["transport"]) == (tree, tr)]

        def med(f: Any, rs: list[dict[str, Any]] = rs) -> float:
            return statistics.median(f(r) for r in rs)

        cells = [med(lambda r, k=k: r["procs"][k]["cpu_us"]) for k in
                 ("producer", "supervisor", "consumer")]
        wake = [med(lambda r, k=k: sum(t["wakeups"] for t in r["procs"][k]["threads"].values()))
                for k in ("producer", "supervisor", "consumer")]
        md.append(f"| {tree} | {tr} | " + " | ".join(f"{c:.1f}" for c in cells)
                  + f" | {sum(cells):.1f} | " + " | ".join(f"{w:.2f}" for w in wake)
                  + f" | {cells[1] * a.rate / 1e4:.1f} % |")
    grinds = [r for r in rows if r.get("instructions")]
    if grinds:
        md += ["", "The supervisor's instructions per message (valgrind callgrind, all threads, "
               "counted from the start signal to the end of the paced run; not load-sensitive):",
               "", "| round | tree | transport | instructions per message | supervisor wake-ups |",
               "|---|---|---|---|---|"]
        for r in grinds:
            md.append(f"| {r['round']} | {r['tree']} | {r['transport']} | "
                      f"{r['instructions']:,.0f} | "
                      f"{sum(t['wakeups'] for t in r['procs']['supervisor']['threads'].values()):.2f} |")
    counted = [r for r in rows if r.get("calls")]
    if counted:
        md += ["", "The supervisor's main thread, function calls (Python and C) per message "
               "(bench/callcount.py, sys.setprofile; counted only during the paced run; a wake-up "
               "is one epoll wait, or one wait of the parked loop in C: shm_park.py):", ""]
        for r in counted:
            c = r["calls"]
            waits = sum(v for k, v in c.items()
                        if k.endswith(("epoll.poll", "eb_park_wait")))
            total = sum(c.values())
            md.append(f"- round {r['round']}, {r['tree']}, {r['transport']}: {total:.1f} calls "
                      f"per message, {waits:.2f} epoll waits per message, "
                      f"{total / max(waits, 1e-9):.1f} calls per wake-up; most called: " + ", ".join(
                          f"{k} {v:.2f}" for k, v in sorted(c.items(), key=lambda x: -x[1])[:25]))
    traced = [r for r in rows if r["procs"]["producer"]["syscalls"]]
    if traced:
        md += ["", "System calls per message (perf stat on the syscall tracepoints, each process, "
               "all threads; `all` is every call, the names the ones counted by name):", ""]
        for r in traced:
            md.append(f"- round {r['round']}, {r['tree']}, {r['transport']}:")
            for k in ("producer", "supervisor", "consumer"):
                sc = r["procs"][k]["syscalls"]
                md.append(f"  - {k} (all {sc.get('all', 0):.2f}): " + ", ".join(
                    f"{name} {v:.2f}" for name, v in sorted(sc.items(), key=lambda x: -x[1])
                    if v >= 0.01 and name != "all"))
                for tname, t in r["procs"][k]["threads"].items():
                    tc = t.get("syscalls", {})
                    if tc.get("all", 0) >= 0.01:
                        md.append(f"    - thread {tname} (all {tc['all']:.2f}): " + ", ".join(
                            f"{name} {v:.2f}" for name, v in sorted(tc.items(), key=lambda x: -x[1])
                            if v >= 0.01 and name != "all"))
    return md


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.wakeups", description=__doc__.split("\n")[0])
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--transports", default="shm,socket")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--base", default="", help="another checkout to alternate with this one")
    ap.add_argument("--no-syscalls", action="store_true", help="do not count system calls (perf)")
    ap.add_argument("--calls", action="store_true",
                    help="count the supervisor's function calls (bench/callcount.py; slows it)")
    ap.add_argument("--instructions", action="store_true",
                    help="run the supervisor under valgrind's callgrind: its instructions per "
                    "message (use a low --rate: it runs ~50x slower)")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(one(a.one, a.rate, a.duration, not a.no_syscalls, a.calls,
                             a.instructions)))
        return
    trees = {"this": TREE}
    if a.base:
        trees = {"base": Path(a.base).resolve(), "this": TREE}
    rows = []
    for rnd in range(a.rounds):
        order = list(trees.items())
        if rnd % 2:
            order.reverse()
        for label, tree in order:
            for tr in a.transports.split(","):
                r = _run_child(tree, tr, a)
                r.update(round=rnd, tree=label)
                rows.append(r)
                pr = r["procs"]
                print(f"round {rnd} {label:5} {tr:6} load {r['load']:.1f} "
                      + " ".join(f"{k} {pr[k]['cpu_us']:.1f}us "
                                 f"{sum(t['wakeups'] for t in pr[k]['threads'].values()):.2f}w "
                                 f"{pr[k]['syscalls'].get('all', 0):.2f}sc" for k in pr), flush=True)
    md = render(rows, a, trees)
    print("\n".join(md))
    if a.out:
        Path(a.out).write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
