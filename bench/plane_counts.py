"""Per paced message, what the supervisor's C data plane did and why a message's batch went to
Python (issue 16: where 1 KiB records lost their latency), counted rather than timed: the load of
a shared machine moves wall-clock figures but hardly these.

    python -m bench.plane_counts [--sizes 100,1024] [--transports shm,socket] [--rate 10000]
                                 [--rounds 2] [--duration 3] [--out bench/results/FILE.md]

One fresh supervisor; per round, transport and size one paced case of `python -m bench`
(bench/run.py `run_case`: one producer `send()`, linger_ms=0, one consumer) with `edgebus
status --json`'s `shm_plane` counters read before and after it: batches appended in C (`frames`),
standing answers written in C, the parked loop's returns to Python and `to_python` by reason
(`declined`: a frame the plane handed to Python, e.g. a batch due an index entry before lat27;
`socket`: a socket read handed back), each per message sent; plus the CPU per message of the
producer, consumer and supervisor, and p50 (noisy). Run it in another tree for an A/B:
`cd OTHER_TREE && PYTHONPATH=. .venv/bin/python THIS_TREE/bench/plane_counts.py`.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import psutil

from bench import peers
from bench import run as R

_KEYS = ("frames", "standing", "sock_frames", "ret_python", "to_py_declined", "to_py_not_fast",
         "to_py_socket", "to_py_after_append", "to_py_standing")


def snapshot(socket: str) -> dict[str, int]:
    """The supervisor's plane counters now (`edgebus status`)."""
    from edgebus import Admin

    with Admin(socket=socket, transport="socket") as a:
        s = a.status()
    sp = s["shm_plane"]
    park = sp.get("park") or {}
    out = {"frames": int(sp["frames"]), "standing": int(sp["standing_answers"]),
           "sock_frames": int(s["socket_plane"]["frames"]),
           "ret_python": int(park.get("returns_python", 0))}
    for why, n in (park.get("to_python") or {}).items():
        out[f"to_py_{why}"] = int(n)
    return out


def run(sizes: list[int], transports: list[str], rate: int, rounds: int,
        duration: float) -> list[dict[str, Any]]:
    from edgebus.testing import EmbeddedBroker

    broker = EmbeddedBroker(log_level="WARNING").start()
    rows: list[dict[str, Any]] = []
    R.RATE = rate
    try:
        sup = psutil.Process(broker.pid)
        for rnd in range(rounds):
            cases = [(t, s) for t in transports for s in sizes]
            for t, size in (cases if rnd % 2 == 0 else cases[::-1]):
                before = snapshot(broker.socket)
                row = R.run_case(peers.Edgebus(t, "send", broker), f"edgebus-{t}", "send", size,
                                 1, 1, True, duration, sup)
                after = snapshot(broker.socket)
                n = max(row["sent"], 1)
                per = {k: (after.get(k, 0) - before.get(k, 0)) / n for k in _KEYS}
                rows.append({"round": rnd, "transport": t, "size": size, "p50_us": row["p50_us"],
                             "cpu": (row["cpu_us_producer"], row["cpu_us_consumer"],
                                     row["cpu_us_server"]), **per})
                print(render_row(rows[-1]), flush=True)
    finally:
        R.RATE = 10_000
        broker.stop()
        broker.cleanup()
    return rows


def render_row(r: dict[str, Any]) -> str:
    p, c, s = r["cpu"]
    return ("| " + " | ".join([str(r["round"]), r["transport"], str(r["size"]), f"{r['p50_us']}",
                               f"{p} / {c} / {s}"] + [f"{r[k]:.3f}" for k in _KEYS]) + " |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.plane_counts",
                                 description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--sizes", default="100,1024")
    ap.add_argument("--transports", default="shm,socket")
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    head = ["| round | transport | size | p50 us | CPU us/msg producer / consumer / supervisor | "
            + " | ".join(_KEYS) + " |", "|" + "---|" * (5 + len(_KEYS))]
    print("\n".join(head), flush=True)
    rows = run([int(s) for s in a.sizes.split(",")], a.transports.split(","), a.rate, a.rounds,
               a.duration)
    md = [f"# edgebus C data plane counts per paced message, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}",
          "", f"`python -m bench.plane_counts --sizes {a.sizes} --transports {a.transports} "
          f"--rate {a.rate} --rounds {a.rounds} --duration {a.duration}`; load average "
          f"{load0:.2f} before / {os.getloadavg()[0]:.2f} after; per message sent.", "", *head,
          *(render_row(r) for r in rows)]
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
