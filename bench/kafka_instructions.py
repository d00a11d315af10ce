"""The Kafka listener's cost as instructions, not time: the supervisor runs under valgrind's
callgrind, which counts every instruction it executes whatever the neighbours on the machine do
(bench/acl_instructions.py's method, for the Kafka listener).

    python -m bench.kafka_instructions [--requests 300] [--batches 30] [--batch 1000]
                                       [--base TREE] [--tree TREE]

For each checkout (`--tree`, default this one, and `--base` if given) a supervisor of its own
code under `valgrind --tool=callgrind`, and confluent-kafka (librdkafka) clients; each phase is
counted between a `callgrind_control --zero` and a `--dump`:
- `one`: `--requests` Produce requests of one 100-byte record (acks=1, linger 0), each waited
  for (`flush()`), each sent once the loop sleeps in epoll_wait: instructions per request;
- `batch`: `--batches` Produce requests of `--batch` records each: instructions per record;
- `fetch`: a consumer reads the `batch` phase's records from the beginning: per record.
A connection's first requests (ApiVersions, Metadata, the first produce) are counted apart.
Prints the instructions per unit and the C functions with the most instructions of their own
(CPython 3.11 runs Python code in one interpreter function, `_PyEval_EvalFrameDefault`: what
the Python of a phase costs shows as that function and its helpers). Writes
bench/results/kafka-instructions.json and .md (`--out` to change the stem).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.acl_instructions import ENV, QUIET, wait_idle
from bench.callgrind import callgrind_control, dumps, self_counts, valgrind_missing

RESULTS = Path(__file__).resolve().parent / "results"
HERE = Path(__file__).resolve().parent.parent
PAYLOAD = b"x" * 100
CLIENT = {"socket.nagle.disable": True}


def run_tree(name: str, tree: Path, out_dir: Path, requests: int, batches: int,
             batch: int) -> dict[str, Any]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from edgebus.testing import EmbeddedBroker

    prefix = out_dir / f"callgrind.{name}"
    broker = EmbeddedBroker(log_level="WARNING", config=QUIET,
                            wrapper=["valgrind", "--tool=callgrind",
                                     f"--callgrind-out-file={prefix}", "--vgdb=yes"])
    old = os.getcwd()
    os.chdir(tree)  # `python -m` puts its working directory first on sys.path
    try:
        broker.start(timeout=600, env={**ENV, "PYTHONPATH": str(tree)})
    finally:
        os.chdir(old)
    pid = int(broker.pid or 0)
    boot = broker.kafka_bootstrap
    units: dict[str, int] = {}
    try:
        ac = AdminClient({"bootstrap.servers": boot})
        for t in ("ki-one", "ki-batch"):
            ac.create_topics([NewTopic(t, 1, config={"max.message.bytes": str(4 << 20)})])[t].result(600)

        def phase(label: str, n: int, work: Any) -> None:
            wait_idle(pid)
            callgrind_control(pid, "--zero")
            work()
            wait_idle(pid)
            callgrind_control(pid, f"--dump={label}")
            units[label] = n

        p = Producer({"bootstrap.servers": boot, "acks": 1, "linger.ms": 0,
                      "batch.num.messages": batch, "queue.buffering.max.messages": 1_000_000,
                      "message.max.bytes": 4 << 20, **CLIENT})

        def one(k: int) -> None:
            for _ in range(k):
                wait_idle(pid)
                p.produce("ki-one", PAYLOAD, partition=0)
                p.flush(600)

        phase("one-setup", 5, lambda: one(5))
        phase("one", requests, lambda: one(requests))

        # linger long enough that each flush() sends the `batch` records as one request.
        pb = Producer({"bootstrap.servers": boot, "acks": 1, "linger.ms": 60_000,
                       "batch.num.messages": batch, "batch.size": 4 << 20,
                       "message.max.bytes": 4 << 20, **CLIENT})
        pb.produce("ki-batch", PAYLOAD, partition=0)  # connected: its setup is not counted
        pb.flush(600)

        def batched() -> None:
            for _ in range(batches):
                wait_idle(pid)
                for _ in range(batch):
                    pb.produce("ki-batch", PAYLOAD, partition=0)
                pb.flush(600)

        phase("batch", batches * batch, batched)
        c = Consumer({"bootstrap.servers": boot, "group.id": "ki", "enable.auto.commit": False,
                      "fetch.wait.max.ms": 100, **CLIENT})
        def fetch(topic: str, total: int) -> None:
            c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
            got = 0
            deadline = time.monotonic() + 900
            while got < total and time.monotonic() < deadline:
                got += sum(1 for m in c.consume(10_000, 1.0) if m.error() is None)
            if got != total:
                raise RuntimeError(f"{name}: read {got} of {total} records from {topic}")

        # The consumer's first requests (its coordinator, the first fetches) apart.
        phase("fetch-setup", requests + 5, lambda: fetch("ki-one", requests + 5))
        phase("fetch", batches * batch + 1, lambda: fetch("ki-batch", batches * batch + 1))
        c.close()
    finally:
        broker.stop(timeout=300)
        broker.cleanup()
    counts = dumps(prefix)
    out: dict[str, Any] = {}
    for label, n in units.items():
        if label in counts:
            out[label] = {"units": n, "instructions": counts[label],
                          "per_unit": round(counts[label] / n)}
            f = next((f for f in prefix.parent.glob(prefix.name + ".*")
                      if f"dump {label}\n" in f.read_text(errors="replace")[:4000]), None)
            if f is not None:
                top = sorted(self_counts(f).items(), key=lambda kv: -kv[1])[:12]
                out[label]["top"] = [(fn, round(v / n)) for fn, v in top]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--tree", type=Path, default=HERE)
    ap.add_argument("--base", type=Path, default=None)
    ap.add_argument("--out", default=str(RESULTS / "kafka-instructions"))
    args = ap.parse_args(argv)
    if (why := valgrind_missing()) is not None:
        print(f"skipped: {why}")
        return 0
    trees = [("this", args.tree.resolve())] + ([("base", args.base.resolve())] if args.base else [])
    out_dir = Path(tempfile.mkdtemp(prefix="ebki-"))
    results = {}
    for name, tree in trees:
        results[name] = run_tree(name, tree, out_dir, args.requests, args.batches, args.batch)
        print(f"{name}: " + ", ".join(f"{k} {v['per_unit']:,}" for k, v in results[name].items()),
              flush=True)

    def rev(tree: Path) -> str:
        return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()

    head = (f"`python -m bench.kafka_instructions {' '.join(argv if argv is not None else sys.argv[1:])}`; "
            + ", ".join(f"{n} at {rev(t)}" for n, t in trees) + f"; load average {os.getloadavg()[0]:.2f}")
    lines = ["| phase | unit | " + " | ".join(f"{n} instructions/unit" for n, _ in trees)
             + (" | this/base |" if args.base else " |"),
             "|---|---|" + "---|" * len(trees) + ("---|" if args.base else "")]
    for label in results["this"]:
        unit = "request" if label.startswith("one") else "record"
        vals = [results[n].get(label, {}).get("per_unit") for n, _ in trees]
        row = f"| {label} | {unit} | " + " | ".join(f"{v:,}" if v else "-" for v in vals)
        if args.base and vals[0] and vals[1]:
            row += f" | {vals[0] / vals[1]:.3f}"
        lines.append(row + " |")
    tops = []
    for n, _ in trees:
        for label, r in results[n].items():
            if "top" in r:
                tops.append(f"{n}, {label}: instructions of their own per unit\n\n```\n"
                            + "\n".join(f"{v:>10,}  {fn}" for fn, v in r["top"]) + "\n```")
    print("\n" + head + "\n\n" + "\n".join(lines) + "\n\n" + "\n\n".join(tops))
    Path(args.out + ".json").write_text(json.dumps(dict(
        when=time.strftime("%Y-%m-%dT%H:%M:%S%z"), command=head, results=results), indent=1))
    Path(args.out + ".md").write_text("\n\n".join(
        [f"# Kafka listener instructions ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
         head, "\n".join(lines), *tops]) + "\n")
    print(f"\nwrote {args.out}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
