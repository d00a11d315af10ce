"""An idempotent producer's throughput with 1 or 5 batches of a partition in flight.

    python -m bench.idempotent_inflight [--records 200000] [--rounds 5] [--size 100]
                                        [--batch-size 16384] [--acks written,durable]
                                        [--base /work/wt-bench]

One supervisor (this tree) serves every case; each case is a producer process that sends
`--records` records of `--size` bytes with send_batch() (1,000 a call) to one partition, then
flush()es. The producer encodes far faster than batches are answered, so every batch fills to
`--batch-size` and each variant sends the same number of batches: what differs is only how
many of them are in flight at once. (With send() one record a call, how full batches got
depended on how the threads were scheduled: on a loaded machine runs of one variant split into
~30 and ~1,000 batches, and that swamped everything else.) The variants, alternated within each
round so that the machine's load falls on all alike:

- `base`: the idempotent producer of the tree `--base` (main's checkout: one batch per
  partition in flight), if given;
- `pp1`: this tree's idempotent producer with max_in_flight_per_partition=1 (the old limit);
- `pp5`: this tree's idempotent producer with the default, 5;
- `plain5`: this tree's producer without idempotence or retries, max_in_flight=5: the same
  depth without sequence numbers (what idempotence itself costs);
- `plain`: the same with its default max_in_flight=32 (the ceiling).

Per case: records/s (wall clock, from the first send to the end of flush), the producer's and
the supervisor's CPU microseconds per record (less sensitive to other load than wall time), and
batches sent. The medians per variant and their ratio to `pp1` go to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil

from bench.trees import commit

RESULTS = Path(__file__).resolve().parent / "results"
HERE = Path(__file__).resolve().parent.parent

PRODUCER = textwrap.dedent("""
    import json, os, sys, time
    from edgebus import Producer
    sock, topic, n, size, acks, mode, batch_size = sys.argv[1:8]
    n, size = int(n), int(size)
    kw = {}
    if not mode.startswith("plain"):
        kw["enable_idempotence"] = True
    if mode.startswith("pp"):
        kw["max_in_flight_per_partition"] = int(mode[2:])
    if mode == "plain5":
        kw["max_in_flight"] = 5
    p = Producer(socket=sock, acks=acks, linger_ms=0, batch_size=int(batch_size), **kw)
    chunk = [b"x" * size] * 1000
    print("ready", flush=True)
    sys.stdin.readline()
    c0, t0 = os.times(), time.perf_counter()
    for _ in range(n // len(chunk)):
        p.send_batch(topic, chunk, partition=0)
    p.flush(300)
    t1, c1 = time.perf_counter(), os.times()
    m = p.metrics()["producer-metrics"]
    p.close()
    print(json.dumps({"wall_s": t1 - t0, "cpu_s": (c1.user + c1.system) - (c0.user + c0.system),
                      "batches": m["batch-send-total"], "records": m["record-send-total"]}))
""")


def _case(tree: Path, python: str, sock: str, topic: str, a: argparse.Namespace, acks: str,
          mode: str, supervisor: psutil.Process) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.Popen([python, "-c", PRODUCER, sock, topic, str(a.records), str(a.size),
                             acks, mode, str(a.batch_size)], cwd=tree, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the producer in {tree} did not start")
    s0 = supervisor.cpu_times()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out = proc.stdout.readline()
    s1 = supervisor.cpu_times()
    if proc.wait(60) != 0 or not out:
        raise RuntimeError(f"the producer in {tree} ({mode}) failed")
    r = json.loads(out)
    n = a.records
    return {"acks": acks, "variant": mode if tree == HERE else "base", "records_per_s": n / r["wall_s"],
            "producer_us_per_record": 1e6 * r["cpu_s"] / n,
            "supervisor_us_per_record": 1e6 * ((s1.user + s1.system) - (s0.user + s0.system)) / n,
            "batches": r["batches"], "records": r["records"], "load1": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.idempotent_inflight", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000, help="a multiple of 1000")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16384)
    ap.add_argument("--acks", default="written,durable")
    ap.add_argument("--base", type=Path, default=None,
                    help="a checkout of main with its own .venv: its idempotent producer as `base`")
    ap.add_argument("--out", default=None,
                    help="results file stem: a name in bench/results (default: a dated one) or a "
                         "path")
    a = ap.parse_args(argv)
    from edgebus import Admin
    from edgebus.testing import EmbeddedBroker

    variants: list[tuple[Path, str, str]] = []
    if a.base is not None:
        variants.append((a.base, str(a.base / ".venv/bin/python"), "idem"))
    variants += [(HERE, sys.executable, m) for m in ("pp1", "pp5", "plain5", "plain")]
    load0 = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="eb-bench-inflight-") as d, \
            EmbeddedBroker(Path(d), log_level="WARNING") as b:
        sup = psutil.Process(b.pid)
        with Admin(socket=b.socket) as admin:
            k = 0
            for rnd in range(a.rounds):
                for acks in a.acks.split(","):
                    # Alternate the order each round: no variant always runs first.
                    order = variants if rnd % 2 == 0 else variants[::-1]
                    for tree, python, mode in order:
                        topic = f"inflight-{k}"
                        k += 1
                        admin.create_topic(topic, 1)
                        row = _case(tree, python, b.socket, topic, a, acks, mode, sup)
                        row["round"] = rnd
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                        admin.delete_topic(topic)
    md = render(rows, a, load0, os.getloadavg())
    print("\n".join(md))
    stem = RESULTS / (a.out or f"idempotent-inflight-{time.strftime('%Y%m%d-%H%M%S')}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_name(stem.name + ".json").write_text(json.dumps(
        {"command": " ".join(["python -m bench.idempotent_inflight", *(argv or sys.argv[1:])]),
         "commit": commit(HERE), "base_commit": commit(a.base) if a.base else None,
         "loadavg_before": load0, "loadavg_after": os.getloadavg(), "rows": rows}, indent=1))
    stem.with_name(stem.name + ".md").write_text("\n".join(md) + "\n")
    return 0


def render(rows: list[dict[str, Any]], a: argparse.Namespace, load0: Any, load1: Any) -> list[str]:
    md = [f"# Idempotent producer, batches in flight per partition, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}",
          "", f"`python -m bench.idempotent_inflight --records {a.records} --rounds {a.rounds} "
          f"--size {a.size} --batch-size {a.batch_size} --acks {a.acks}"
          + (f" --base {a.base}" if a.base else "") + "`", "",
          f"This tree {commit(HERE)}" + (f"; base {a.base} {commit(a.base)}" if a.base else "")
          + f". Load average (1/5/15 min) before {tuple(round(x, 2) for x in load0)}, after "
          f"{tuple(round(x, 2) for x in load1)}: a shared 2-CPU machine, so wall-clock figures are "
          "noisy; variants alternate within each round, medians over rounds, ratios against pp1 "
          "of the same run.", "",
          "| acks | variant | records/s (median) | x pp1 | producer us/record | supervisor us/record "
          "| batches | runs |", "|---|---|---|---|---|---|---|---|"]
    for acks in a.acks.split(","):
        ref = statistics.median(r["records_per_s"] for r in rows
                                if r["acks"] == acks and r["variant"] == "pp1")
        for v in ("base", "pp1", "pp5", "plain5", "plain"):
            rs = [r for r in rows if r["acks"] == acks and r["variant"] == v]
            if not rs:
                continue
            rate = statistics.median(r["records_per_s"] for r in rs)
            md.append(f"| {acks} | {v} | {rate:,.0f} | {rate / ref:.2f} | "
                      f"{statistics.median(r['producer_us_per_record'] for r in rs):.1f} | "
                      f"{statistics.median(r['supervisor_us_per_record'] for r in rs):.1f} | "
                      f"{statistics.median(r['batches'] for r in rs):,.0f} | {len(rs)} |")
    return md


if __name__ == "__main__":
    sys.exit(main())
