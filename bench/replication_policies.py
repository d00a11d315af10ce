"""A long link cut, then the backlog drains: priorities and the bandwidth cap, measured.

    python -m bench.replication_policies [--cap 1MiB] [--seconds 30]

Real processes (two supervisors, `edgebus replicate`). The replicator connects and makes the
mirrors, then is stopped (SIGSTOP: a link down) while a backlog is written to two topics, a
high-priority `alarms` (about 1/8 of the bytes) and a bulk one, enough for more than --seconds at
the cap. Then it is let go, and the run records, from the replicator's own /status: when each
topic's backlog finished (seconds after the link came back), and the bytes shipped over the first
--seconds against the cap (the token bucket allows cap x (T + 1): 3 % over a 30 s window). The
CI test (tests/replication/test_conformance.py, priority and cap) checks the order and a
lower bound on the time with a 5 MB backlog; this is the 30 s measurement of the issue.
Writes bench/results/replication_policies.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.replication import Setup
from bench.replication_harness import RESULTS, free_port, write_report
from edgebus import Admin, Producer
from edgebus.config import parse_size


def shipped(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
        doc = json.loads(r.read())
    out: dict[str, int] = {}
    for p in doc["links"]["bench"]["partitions"]:
        out[p["topic"]] = out.get(p["topic"], 0) + p["shipped_bytes"]
    return out


def run(root: Path, cap: int, seconds: float) -> dict[str, Any]:
    s = Setup(root, True)
    port = free_port()
    cfg = yaml.safe_load(s.cfg.read_text())
    cfg["metrics"] = {"listen": f"127.0.0.1:{port}"}
    cfg["links"][0]["topics"] = [{"pattern": "b-alarms", "priority": 10}, "b-bulk"]
    cfg["links"][0]["max_bytes_per_s"] = cap
    s.cfg.write_text(yaml.safe_dump(cfg))
    try:
        with Admin(socket=s.src.socket) as a:
            a.create_topic("b-bulk", 1)
            a.create_topic("b-alarms", 1)
        s.start_replicator()
        assert s.rep is not None
        while s.end(s.dst.socket, "b-alarms") < 0 or s.end(s.dst.socket, "b-bulk") < 0:
            time.sleep(0.02)
        time.sleep(0.5)
        os.kill(s.rep.pid, signal.SIGSTOP)  # the link is down
        total = int(cap * (seconds + 4))  # more than the window holds
        value = b"v" * 1000
        with Producer(socket=s.src.socket, batch_size=64 * 1024) as p:
            for topic, share in (("b-bulk", 7 / 8), ("b-alarms", 1 / 8)):
                for _ in range(int(total * share) // 1_000_000 + 1):
                    p.send_batch(topic, [value] * 1000, partition=0)
            p.flush()
        want = {t: s.end(s.src.socket, t) for t in ("b-alarms", "b-bulk")}
        done: dict[str, float] = {}
        os.kill(s.rep.pid, signal.SIGCONT)  # the link is back
        t0 = time.monotonic()
        base = shipped(port)
        at_window: dict[str, int] | None = None
        while len(done) < 2:
            now = time.monotonic() - t0
            for t in want:
                if t not in done and s.end(s.dst.socket, t) >= want[t]:
                    done[t] = now
            if at_window is None and now >= seconds:
                at_window = shipped(port)
                window = now
            time.sleep(0.02)
        if at_window is None:
            raise SystemExit("the backlog drained before the window ended: raise --seconds' data")
        sent = sum(at_window.values()) - sum(base.values())
        return {"cap_bytes_per_s": cap, "window_s": round(window, 3), "bytes_in_window": sent,
                "rate_vs_cap": sent / window / cap,
                "alarms_done_s": round(done["b-alarms"], 3), "bulk_done_s": round(done["b-bulk"], 3),
                "backlog_records": want}
    finally:
        s.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cap", default="1MiB")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--out", default=str(RESULTS / "replication_policies.json"))
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="eb-bench-") as d:
        r = run(Path(d), parse_size(args.cap), args.seconds)
    print(f"after a cut: alarms (priority 10) backlog done at {r['alarms_done_s']:.1f} s, bulk at "
          f"{r['bulk_done_s']:.1f} s; shipped {r['bytes_in_window']:,} bytes in "
          f"{r['window_s']:.1f} s at a cap of {r['cap_bytes_per_s']:,} B/s: "
          f"{r['rate_vs_cap']:.3f} of the cap")
    write_report(args.out, load_before, result=r)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
