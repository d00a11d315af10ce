"""Why end-to-end Kafka throughput differs between brokers when their CPU per record does not:
what librdkafka's producer and consumer do against each broker in the same 3-second run.

    python -m bench.kafka_flow [--rounds 2]

One confluent-kafka producer (acks=1, linger 5 ms, one produce() per 100-byte record for 3 s) and
one consumer (assigned from the beginning, fetch.wait.max.ms 100) per case, as the kafka-* rows of
`python -m bench`, against the edgebus supervisor's Kafka listener and Tansu, alternated (Tansu
first in odd rounds). From librdkafka's own statistics (statistics.interval.ms): the records the
producer got out in its 3 seconds and in how many Produce requests, and the consumer's Fetch
requests and response sizes, and when it had everything. Writes bench/results/kafka-flow.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.kafka_peers import Tansu
from edgebus.testing import EmbeddedBroker

RESULTS = Path(__file__).resolve().parent / "results"
CLIENT = {"socket.nagle.disable": True, "statistics.interval.ms": 500}


def _broker(stats: dict[str, Any]) -> dict[str, Any]:
    """The statistics of the connection to the broker itself (not the bootstrap one)."""
    return next(b for b in stats["brokers"].values() if b["nodeid"] >= 0)


def _produce(boot: str, topic: str, seconds: float, out: Any) -> None:
    stats: dict[str, Any] = {}
    p = Producer({"bootstrap.servers": boot, "acks": 1, "linger.ms": 5,
                  "queue.buffering.max.messages": 1_000_000, "message.max.bytes": 4 << 20,
                  "stats_cb": lambda s: stats.update(json.loads(s)), **CLIENT})
    value = b"x" * 100
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(1000):
            try:
                p.produce(topic, value, partition=0)
            except BufferError:
                p.poll(0.01)
                p.produce(topic, value, partition=0)
        n += 1000
    p.flush(60)
    p.poll(0.6)  # a last statistics report
    out.put(("p", n, _broker(stats)["tx"]))


def _consume(boot: str, topic: str, out: Any, ready: Any, total: Any) -> None:
    stats: dict[str, Any] = {}
    c = Consumer({"bootstrap.servers": boot, "group.id": f"flow-{topic}", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 100, "fetch.message.max.bytes": 4 << 20,
                  "stats_cb": lambda s: stats.update(json.loads(s)), **CLIENT})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    c.consume(1, 0.5)
    ready.set()
    got = 0
    t0 = last = time.monotonic()
    while not (total.value and got >= total.value):
        msgs = c.consume(10000, 0.05)
        if msgs:
            got += len(msgs)
            last = time.monotonic()
    time.sleep(0.6)
    c.poll(0.1)
    b = _broker(stats)
    out.put(("c", got, last - t0, b["tx"], b["rxbytes"] / max(b["rx"], 1)))
    c.close()


def one(boot: str, name: str) -> dict[str, Any]:
    topic = f"flow-{os.getpid()}-{time.monotonic_ns()}"
    ac = AdminClient({"bootstrap.servers": boot})
    ac.create_topics([NewTopic(topic, 1, config={"max.message.bytes": str(4 << 20)})])[topic].result(30)
    ctx = mp.get_context("fork")
    out, ready, total = ctx.Queue(), ctx.Event(), ctx.Value("q", 0)
    c = ctx.Process(target=_consume, args=(boot, topic, out, ready, total))
    c.start()
    ready.wait(30)
    p = ctx.Process(target=_produce, args=(boot, topic, 3.0, out))
    p.start()
    first = out.get(timeout=120)
    total.value = first[1] if first[0] == "p" else 0
    second = out.get(timeout=120)
    rp, rc = (first, second) if first[0] == "p" else (second, first)
    p.join(30)
    c.join(30)
    row = dict(broker=name, sent_in_3s=rp[1], produce_requests=rp[2], consumer_seconds=round(rc[2], 2),
               end_to_end_per_s=round(rc[1] / rc[2]), fetch_requests=rc[3],
               kb_per_fetch_response=round(rc[4] / 1000))
    print(f"{name:8}: the producer sent {rp[1]:,} records in 3 s ({rp[2]} Produce requests); the "
          f"consumer had them all after {rc[2]:.2f} s ({row['end_to_end_per_s']:,}/s) with "
          f"{rc[3]} Fetch requests of {row['kb_per_fetch_response']:,} kB each", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    b = EmbeddedBroker(log_level="WARNING").start()
    tansu = Tansu()
    rows = []
    try:
        if tansu.available() is None:
            tansu.start()
        for rnd in range(args.rounds):
            brokers = [(b.kafka_bootstrap, "edgebus")]
            if tansu.proc is not None:
                brokers.append((tansu.bootstrap(), "tansu"))
            if rnd % 2:
                brokers.reverse()  # alternate: neither broker always runs first
            for bootstrap, name in brokers:
                rows.append(one(bootstrap, name))
                rows[-1]["round"] = rnd
    finally:
        b.stop()
        b.cleanup()
        tansu.stop()
    (RESULTS / "kafka-flow.json").write_text(json.dumps(dict(
        when=time.strftime("%Y-%m-%dT%H:%M:%S%z"), command="python -m bench.kafka_flow",
        loadavg=os.getloadavg(), rows=rows), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
