"""What one paced send() costs the producer process: CPU, Python calls, syscalls, thread switches.

    python -m bench.producer_cost [--transports shm,socket,loop] [--rate 1000] [--seconds 3]
                                  [--rounds 2] [--measures cpu,calls,syscalls]

One producer process sends 100-byte records with `send()` (linger_ms=0, acks="written") at a
fixed rate to a fresh supervisor, paced exactly as bench/run.py's `producer_main` (sleep until
the next record is due, then send). `loop` is the same loop with a send() that does nothing: the
pacing's own cost, the part no producer can shed. Per send, over the measured window (after a
second's warm-up):

- `cpu`: the process's user+system CPU microseconds (a run of its own: no tracer attached);
- `calls`: Python function calls and C calls, all threads (sys.setprofile/threading.setprofile,
  in a run of its own since profiling slows everything), and per thread;
- `syscalls`: system calls of all threads (`strace -c -f -p`, a run of its own) and the
  voluntary context switches of each thread (/proc/PID/task/*/status);
- `instructions`: instructions executed by all its threads, the producer process run under
  valgrind's callgrind (counters zeroed after the warm-up and dumped after the window with
  `callgrind_control`, as bench/acl_instructions.py does; the loop is far slower there, so it
  never sleeps: the count is the work per send, without the pacing's sleep or cache misses).
  Caveat: the producer's other threads (the acknowledgement reader's timed waits, spins in C)
  still run on the clock, so the count moves with how the threads interleave: on the loaded
  2-core machine of issue 16's stop 23 the same tree gave 41,000 to 100,000 per send between
  runs. Compare several runs; the call and syscall counts are the steadier figures.
- `send-instructions`: instructions executed inside `send()` alone, in the sending thread:
  callgrind collecting only while a call of `operator.call` (the loop's way of calling `send`)
  runs (`--collect-atstart=no --toggle-collect=_operator_call`), at `--rate` (200/s suits: the
  producer under valgrind still sleeps between sends, so the supervisor has read each request
  and the sends take the one-step path). Neither the pacing loop nor the other threads are
  counted: the steadiest figure of a send's own cost (issue 16, prod26).

Calls and syscalls do not move with the machine's load; CPU does (compare within a round: the
transports are alternated round by round).
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

WARMUP_S = 1.0
SIZE = 100


def _ctxsw(pid: int) -> dict[str, int]:
    """Voluntary context switches per thread name of a process."""
    out: dict[str, int] = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        out[name] += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):  # a thread (or the process) just ended
            continue
    return dict(out)


def _child(sock: str, transport: str, rate: float, seconds: float, measure: str,
           ready: Any, go: Any, results: Any) -> None:
    counts: collections.Counter[tuple[int, str]] = collections.Counter()
    on = [False]

    def prof(frame: Any, event: str, arg: Any) -> None:
        if on[0] and (event == "call" or event == "c_call"):
            counts[(threading.get_ident(), event)] += 1

    if measure == "calls":  # before the producer starts its threads: they inherit it
        threading.setprofile(prof)
        sys.setprofile(prof)
    if transport == "loop":
        def send(v: bytes) -> None:
            pass
        close = flush = lambda: None
    else:
        from edgebus import Producer

        p = Producer(socket=sock, transport=transport, linger_ms=0)
        topic = "cost"

        def send(v: bytes) -> None:
            p.send(topic, v, partition=0)

        def flush() -> None:
            p.flush(60)
        close = p.close
    names = {t.ident: t.name for t in threading.enumerate()}
    ready.set()
    go.wait()
    value = b"x" * SIZE
    n_warm = int(rate * WARMUP_S)
    n = n_warm + int(rate * seconds)
    step = 1e9 / rate
    mono = time.monotonic_ns
    t0 = mono()
    cpu0 = 0.0
    for k in range(n):
        if k == n_warm:
            results.put(("window", os.getpid()))
            t = os.times()
            cpu0 = t.user + t.system
            on[0] = True
        delay = t0 + int(k * step) - mono()
        if delay > 0:
            time.sleep(delay / 1e9)
        send(value)
    on[0] = False
    t = os.times()
    cpu = t.user + t.system - cpu0
    flush()
    results.put(("end", os.getpid()))
    names.update({t.ident: t.name for t in threading.enumerate()})
    per_thread: dict[str, dict[str, int]] = {}
    for (ident, ev), c in counts.items():
        per_thread.setdefault(names.get(ident, str(ident)), {}).setdefault(ev, 0)
        per_thread[names.get(ident, str(ident))][ev] += c
    results.put(("done", n - n_warm, cpu, per_thread))
    close()


def _strace_summary(text: str) -> tuple[int, dict[str, int]]:
    total, by = 0, {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and not line.startswith("100.00"):
            calls = int(f[3])
            by[f[-1]] = calls
        elif len(f) >= 4 and f[-1] == "total":
            total = int(f[3]) if len(f) >= 5 else int(f[2])
    return total, by


def _instr_child(argv: list[str]) -> None:
    """The producer run under callgrind: warm up, say W, wait for a line (counters zeroed),
    send, say E, wait for a line (counters dumped)."""
    sock, transport, rate, n = argv[0], argv[1], float(argv[2]), int(argv[3])
    if transport == "loop":
        def send(v: bytes) -> None:
            pass
        flush = close = lambda: None
    else:
        from edgebus import Producer

        p = Producer(socket=sock, transport=transport, linger_ms=0)

        def send(v: bytes) -> None:
            p.send("cost", v, partition=0)

        def flush() -> None:
            p.flush(60)
        close = p.close
    value = b"x" * SIZE
    step = 1e9 / rate

    def paced(count: int) -> None:
        t0 = time.monotonic_ns()
        for k in range(count):
            delay = t0 + int(k * step) - time.monotonic_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
            send(value)

    paced(50)
    flush()
    print("W", flush=True)
    sys.stdin.readline()
    paced(n)
    print("E", flush=True)
    sys.stdin.readline()
    flush()
    close()


def _send_instr_child(argv: list[str]) -> None:
    """The producer under callgrind counting send() only: warm up, then n paced sends made
    through operator.call, the function callgrind toggles collection on."""
    import operator

    sock, transport, rate, n = argv[0], argv[1], float(argv[2]), int(argv[3])
    from edgebus import Producer

    p = Producer(socket=sock, transport=transport, linger_ms=0)
    value = b"x" * SIZE
    for _ in range(100):
        p.send("cost", value, partition=0)
        time.sleep(1 / rate)
    p.flush(60)
    call, send = operator.call, p.send
    for _ in range(n):
        call(send, "cost", value, None, None, 0)
        time.sleep(1 / rate)
    p.flush(60)
    p.close()


def run_send_instructions(sock: str, transport: str, rate: float, n: int, out_dir: str) -> float:
    """Instructions per send inside send() (the sending thread only) under callgrind."""
    out = os.path.join(out_dir, f"callgrind.send.{transport}")
    subprocess.run(["valgrind", "--tool=callgrind", "--collect-atstart=no",
                    "--toggle-collect=_operator_call", f"--callgrind-out-file={out}",
                    sys.executable, os.path.abspath(__file__), "--send-instr-child", sock,
                    transport, str(rate), str(n)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=900)
    with open(out) as f:
        m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
    if not m:
        raise RuntimeError(f"no totals in {out}")
    return int(m.group(1)) / n


def run_instructions(sock: str, transport: str, rate: float, n: int, out_dir: str) -> float:
    """Instructions per send of the producer process (all threads) under callgrind."""
    out = os.path.join(out_dir, f"callgrind.{transport}.%p")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                             sys.executable, os.path.abspath(__file__), "--instr-child", sock,
                             transport, str(rate), str(n)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline().strip() == "W"
    subprocess.run(["callgrind_control", "--zero", str(proc.pid)], capture_output=True, check=True)
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "E"
    subprocess.run(["callgrind_control", "--dump=window", str(proc.pid)], capture_output=True,
                   check=True)
    proc.stdin.write("\n")
    proc.stdin.flush()
    proc.wait(300)
    for name in os.listdir(out_dir):
        if name.startswith(f"callgrind.{transport}.{proc.pid}") and name != \
                f"callgrind.{transport}.{proc.pid}":
            with open(os.path.join(out_dir, name)) as f:
                text = f.read()
            if "window" in text.split("\ncmd:", 1)[0] + text[:2000]:
                m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
                if m:
                    return int(m.group(1)) / n
    raise RuntimeError(f"no callgrind dump named window in {out_dir}")


def run_one(sock: str, transport: str, rate: float, seconds: float, measure: str) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    ready, go, results = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_child, args=(sock, transport, rate, seconds, measure, ready, go,
                                            results))
    proc.start()
    ready.wait(60)
    go.set()
    _kind, pid = results.get(timeout=60)
    strace = None
    if measure == "syscalls":
        strace = subprocess.Popen(["strace", "-c", "-f", "-q", "-p", str(pid)],
                                  stderr=subprocess.PIPE, text=True)
    sw0 = _ctxsw(pid)
    _kind, _ = results.get(timeout=seconds + 60)
    sw1 = _ctxsw(pid)
    out: dict[str, Any] = {}
    if strace is not None:
        strace.send_signal(signal.SIGINT)
        _, err = strace.communicate(timeout=30)
        out["strace"] = _strace_summary(err)
    _kind, sent, cpu, per_thread = results.get(timeout=60)
    proc.join(30)
    out.update(sent=sent, cpu_us=cpu * 1e6 / sent,
               ctxsw={k: (sw1.get(k, 0) - v) / sent for k, v in sw0.items()},
               calls=per_thread)
    if strace is not None:
        total, by = out["strace"]
        out["syscalls"] = total / sent
        out["syscalls_by"] = {k: v / sent for k, v in sorted(by.items(), key=lambda kv: -kv[1])}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.producer_cost",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--transports", default="shm,socket,loop")
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--measures", default="cpu,calls,syscalls")
    ap.add_argument("--instr-sends", type=int, default=300, help="sends counted under callgrind")
    a = ap.parse_args(argv)
    import edgebus
    from edgebus import Admin
    from edgebus.testing import EmbeddedBroker
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(edgebus.__file__))).stdout.strip()
    print(f"# producer cost per send: rate {a.rate:g}/s, {SIZE} B, linger_ms=0; commit {commit}; "
          f"load {os.getloadavg()[0]:.2f}")
    with EmbeddedBroker() as b:
        with Admin(socket=b.socket) as adm:
            adm.create_topic("cost", partitions=1)
        for r in range(a.rounds):
            ts = a.transports.split(",")
            for tr in ts if r % 2 == 0 else ts[::-1]:
                for m in a.measures.split(","):
                    if m == "send-instructions":
                        if tr == "loop":
                            continue  # no send() to count
                        with tempfile.TemporaryDirectory(prefix="eb-cg-") as d:
                            per = run_send_instructions(b.socket, tr, a.rate, a.instr_sends, d)
                        print(f"round {r} {tr:6} instructions in send()/send {per:,.0f}")
                        sys.stdout.flush()
                        continue
                    if m == "instructions":
                        with tempfile.TemporaryDirectory(prefix="eb-cg-") as d:
                            per = run_instructions(b.socket, tr, a.rate, a.instr_sends, d)
                        print(f"round {r} {tr:6} instructions/send {per:,.0f}")
                        sys.stdout.flush()
                        continue
                    res = run_one(b.socket, tr, a.rate, a.seconds, m)
                    if m == "cpu":
                        print(f"round {r} {tr:6} cpu_us/send {res['cpu_us']:.1f}  "
                              f"voluntary switches/send "
                              + " ".join(f"{k}={v:.2f}" for k, v in res["ctxsw"].items() if v))
                    elif m == "calls":
                        tot = {ev: sum(c.get(ev, 0) for c in res["calls"].values()) / res["sent"]
                               for ev in ("call", "c_call")}
                        thr = " ".join(f"{k}={sum(c.values()) / res['sent']:.1f}"
                                       for k, c in res["calls"].items())
                        print(f"round {r} {tr:6} python calls/send {tot['call']:.1f} "
                              f"C calls/send {tot['c_call']:.1f}  (per thread: {thr})")
                    else:
                        top = " ".join(f"{k}={v:.2f}" for k, v in
                                       list(res["syscalls_by"].items())[:8])
                        print(f"round {r} {tr:6} syscalls/send {res['syscalls']:.2f}  ({top})")
                    sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--instr-child"]:
        _instr_child(sys.argv[2:])
    elif sys.argv[1:2] == ["--send-instr-child"]:
        _send_instr_child(sys.argv[2:])
    else:
        main()
