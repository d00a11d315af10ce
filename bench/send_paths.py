"""Python and C calls per send() on each of the producer's send paths (send30): what moving the
general path's reap before its append may change.

    python -m bench.send_paths [--sends 2000] [--rate 1000] [--transports shm,socket] [--out FILE]

A paced producer (100-byte records, one partition) against a fresh supervisor; calls counted
with sys.setprofile in the sending thread only, inside send() / send_batch() (the pacing's
sleep and the other threads not counted). Paths:

- `one-step`: linger_ms=0, plain send(): the one-step send (the C Sender when built and
  EDGEBUS_PRODUCER_C_SEND is not 0: then its C calls are the count);
- `headers`: linger_ms=0, send() with one header: the general path (append, then the inline
  send of the sealed batch);
- `linger`: linger_ms=2, plain send(): the general path's append, the I/O thread sends;
- `batch`: linger_ms=0, send_batch() of 10 values (per call).

The counts move with how many acknowledgements a send happens to take (their settling runs in
the sending thread), so compare medians of runs of both trees, alternated. Run it in a tree with
that tree's .venv (`cd TREE && .venv/bin/python -m bench.send_paths`, or the script's path).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

SIZE = 100
PATHS = ("one-step", "headers", "linger", "batch")


def measure(sock: str, transport: str, path: str, sends: int, rate: float) -> tuple[float, float]:
    """(Python calls, C calls) per call of the path's send, in the sending thread."""
    from edgebus import Producer

    linger = 2 if path == "linger" else 0
    p = Producer(socket=sock, transport=transport, linger_ms=linger)
    value = b"x" * SIZE
    values = [value] * 10
    hdrs = [("h", b"1")]
    if path == "batch":
        def send() -> Any:
            return p.send_batch("cost", values, partition=0)
    elif path == "headers":
        def send() -> Any:
            return p.send("cost", value, partition=0, headers=hdrs)
    else:
        def send() -> Any:
            return p.send("cost", value, partition=0)
    counts = {"call": 0, "c_call": 0}
    me = threading.get_ident()
    on = [False]

    def prof(frame: Any, event: str, arg: Any) -> None:
        if on[0] and threading.get_ident() == me and event in counts:
            counts[event] += 1

    for _ in range(100):  # warm-up: connection, partition cache, the reader's lazy state
        send()
        time.sleep(1 / rate)
    p.flush(60)
    sys.setprofile(prof)
    step = 1 / rate
    t0 = time.monotonic()
    for k in range(sends):
        delay = t0 + k * step - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        on[0] = True
        send()
        on[0] = False
    sys.setprofile(None)
    p.flush(60)
    p.close()
    # the profiler's own calls (the `on` flag, the c_call events of the pacing) are outside
    return counts["call"] / sends, counts["c_call"] / sends


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.send_paths", description=__doc__.split("\n")[0])
    ap.add_argument("--sends", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--transports", default="shm,socket")
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None, help="also append the lines to this file")
    a = ap.parse_args(argv)
    import edgebus
    from edgebus import Admin
    from edgebus.testing import EmbeddedBroker
    from edgebus.tuning import C_SEND

    tree = os.path.dirname(os.path.dirname(edgebus.__file__))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=tree).stdout.strip()
    lines = [f"# calls per send: {tree} ({commit}), C send {'on' if C_SEND else 'off'}, "
             f"rate {a.rate:g}/s, {a.sends} sends x {a.rounds} rounds; "
             f"load {os.getloadavg()[0]:.2f}"]
    print(lines[0], flush=True)
    with EmbeddedBroker() as b:
        with Admin(socket=b.socket) as adm:
            adm.create_topic("cost", partitions=1)
        for tr in a.transports.split(","):
            for path in a.paths.split(","):
                got = [measure(str(b.socket), tr, path, a.sends, a.rate) for _ in range(a.rounds)]
                py = statistics.median(g[0] for g in got)
                c = statistics.median(g[1] for g in got)
                line = (f"{tr:6} {path:8} python calls/send {py:6.2f} C calls/send {c:6.2f}  "
                        f"(runs: {', '.join(f'{g[0]:.2f}/{g[1]:.2f}' for g in got)})")
                print(line, flush=True)
                lines.append(line)
    lines.append(f"# load at the end {os.getloadavg()[0]:.2f}")
    print(lines[-1])
    if a.out:
        with open(a.out, "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
