"""The supervisor's CPU per message at a paced rate, with the parked loop's counters: how often
the wait in C (shm_park.py) went back to Python and why (issue 16, sup27).

    python -m bench.park_returns [--rate 10000] [--duration 4] [--transports shm,socket]
                                 [--rounds 3] [--base TREE] [--out FILE.md]

One supervisor (EmbeddedBroker), one producer `send()` (linger_ms=0, acks="written") and one
consumer as bench/wakeups.py runs them, 100-byte records. Per case: the supervisor's CPU us per
message (all threads, /proc schedstat), and from `edgebus status` the frames taken in C, the
standing answers written in C, the parked wait's returns by kind (`returns_python`: links or a
sync-back needed Python; `returns_timeout`: the loop's deadline) and the links handed to Python
by reason (`to_python`), per 1,000 messages. The counts move much less with the machine's load
than CPU does (a return to Python is a Python turn: grant checks, sync-back, the frame or wake-up
Python serves). With --base TREE each round runs TREE's code too, alternated (this, base, base,
this, ...), each case in a process of its own importing its tree's edgebus (bench/trees.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.paced_pair import PacedPair, new_topic, thread_counters, threads_since

HERE = Path(__file__).resolve()
TREE = HERE.parents[1]


def one(transport: str, rate: int, duration: float) -> dict[str, Any]:
    """One case in this process's tree."""
    from edgebus import Admin
    from edgebus.testing import EmbeddedBroker

    n = int(rate * duration)
    broker = EmbeddedBroker(log_level="WARNING").start(timeout=30)

    def plane() -> dict[str, Any]:
        with Admin(socket=broker.socket, transport="socket") as a:
            return dict(a.status()["shm_plane"])

    try:
        topic = new_topic(broker.socket, "park-returns")
        pair = PacedPair(broker.socket, transport, topic, rate, n)
        assert broker.pid is not None
        s0 = plane()
        t0 = thread_counters(broker.pid)
        load = os.getloadavg()[0]
        pair.run(duration + 180)
        t1 = thread_counters(broker.pid)
        s1 = plane()
        pair.close()
    finally:
        broker.stop()
        broker.cleanup()
    cpu = sum(v[0] for v in threads_since(t0, t1).values()) / 1000 / n
    p0, p1 = s0.get("park") or {}, s1.get("park") or {}

    def per_k(a: Any, b: Any) -> float:
        return round(1000 * ((b or 0) - (a or 0)) / n, 1)

    out = {"transport": transport, "rate": rate, "load": load, "supervisor_us": round(cpu, 2),
           "frames_c": per_k(s0.get("frames"), s1.get("frames")),
           "standing_c": per_k(s0.get("standing_answers"), s1.get("standing_answers"))}
    # (held_answers: a socket consumer's fetch held and answered in C, sockplane28; 0 before)
    for k in ("wakeups", "socket_reads", "held_answers", "returns_python", "returns_timeout",
              "returns_loop"):
        out[k] = per_k(p0.get(k), p1.get(k))
    why0, why1 = p0.get("to_python") or {}, p1.get("to_python") or {}
    out["to_python"] = {k: per_k(why0.get(k), v) for k, v in why1.items()}
    return out


def _child(tree: Path, transport: str, a: argparse.Namespace) -> dict[str, Any]:
    from bench.trees import run_case

    return run_case(tree, [sys.executable, str(HERE), "--one", transport, "--rate", str(a.rate),
                           "--duration", str(a.duration)])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.park_returns",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=int, default=10000)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--transports", default="shm,socket")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--base", default="", help="another checkout, alternated with this one")
    ap.add_argument("--out", default="")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(one(a.one, a.rate, a.duration)))
        return
    from bench.trees import commit

    trees = {"this": TREE, **({"base": Path(a.base).resolve()} if a.base else {})}
    rows: list[dict[str, Any]] = []
    load0 = os.getloadavg()
    for r in range(a.rounds):
        order = list(trees) if r % 2 == 0 else list(reversed(trees))
        for name in order:
            for t in a.transports.split(","):
                row = {"round": r, "tree": name, **_child(trees[name], t, a)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    md = [f"# issue 16: the parked loop's returns to Python, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}",
          "", f"`python -m bench.park_returns --rate {a.rate} --duration {a.duration} --transports "
          f"{a.transports} --rounds {a.rounds}" + (f" --base {a.base}" if a.base else "") + "`", "",
          "Trees: " + ", ".join(f"{k} = {v} ({commit(v)})" for k, v in trees.items())
          + f"; load average {load0[0]:.1f} before / {os.getloadavg()[0]:.1f} after "
          "(2 CPUs, shared: CPU is noisy, the counts much less).", "",
          "Supervisor CPU us per message; the rest per 1,000 messages: frames taken in C, "
          "standing answers written in C (of which: held socket consumers answered in C), the "
          "parked wait's returns (python / timeout) and the links handed to Python by reason.", "",
          "| round | tree | transport | load | supervisor us | frames in C | standing in C "
          "| of which held in C | returns python | returns timeout | to_python |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in rows:
        why = ", ".join(f"{k} {v}" for k, v in x["to_python"].items() if v)
        md.append(f"| {x['round']} | {x['tree']} | {x['transport']} | {x['load']:.1f} | "
                  f"{x['supervisor_us']} | {x['frames_c']} | {x['standing_c']} | "
                  f"{x['held_answers']} | "
                  f"{x['returns_python']} | {x['returns_timeout']} | {why} |")
    md += ["", "Medians over the rounds:", "",
           "| tree | transport | supervisor us | returns python | returns timeout |",
           "|---|---|---|---|---|"]
    for name in trees:
        for t in a.transports.split(","):
            sel = [x for x in rows if x["tree"] == name and x["transport"] == t]
            if sel:
                md.append(f"| {name} | {t} | {statistics.median(x['supervisor_us'] for x in sel):.1f} "
                          f"| {statistics.median(x['returns_python'] for x in sel):.1f} "
                          f"| {statistics.median(x['returns_timeout'] for x in sel):.1f} |")
    print("\n".join(md))
    if a.out:
        Path(a.out).write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
