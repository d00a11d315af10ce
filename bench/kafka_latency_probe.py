"""What a librdkafka consumer's read loop adds to latency, without any backlog.

    python -m bench.kafka_latency_probe

At 200 msg/s (far below what any broker here needs CPU for, so the machine's load hardly
matters), one-way latency from a confluent-kafka producer (acks=1, linger 0) through the
supervisor's Kafka listener to a consumer that reads with `consume(10000, 0.05)` (the harness
before: consume() returns when it has 10,000 messages or the 50 ms have passed, so each message
waits for the window) and with `poll(0.05)` then `consume(n, 0)` (bench/kafka_peers.py now), with
Nagle on (librdkafka's default) and off. Alternated, twice each. Writes
bench/results/kafka-latency-probe.json.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from edgebus.testing import EmbeddedBroker

RESULTS = Path(__file__).resolve().parent / "results"

def run(boot: str, topic: str, mode: str, nagle: bool) -> tuple[int, float, float]:
    """(messages, p50 us, p99 us) of one 3-second run at 200 msg/s."""
    c = Consumer({"bootstrap.servers": boot, "group.id": f"probe-{topic}",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100,
                  "socket.nagle.disable": nagle})
    c.assign([TopicPartition(topic, 0, OFFSET_END)])
    c.consume(1, 1.0)  # connected, its fetch waiting at the end
    p = Producer({"bootstrap.servers": boot, "acks": 1, "linger.ms": 0,
                  "socket.nagle.disable": nagle})
    p.produce(topic, b"warm", partition=0)
    p.flush(10)
    lat: list[int] = []
    stop = time.monotonic() + 3

    def produce() -> None:
        while time.monotonic() < stop:
            p.produce(topic, struct.pack("<q", time.monotonic_ns()), partition=0)
            p.poll(0)
            time.sleep(0.005)
        p.flush(10)

    t = threading.Thread(target=produce)
    t.start()
    while time.monotonic() < stop + 1:
        if mode == "old":
            msgs = c.consume(10000, 0.05)
        else:
            first = c.poll(0.05)
            msgs = [] if first is None else [first, *c.consume(10000, 0)]
        now = time.monotonic_ns()
        lat += [now - struct.unpack("<q", m.value())[0] for m in msgs
                if m.error() is None and len(m.value()) == 8]
    t.join()
    c.close()
    lat.sort()
    return len(lat), lat[len(lat) // 2] / 1e3, lat[int(len(lat) * 0.99)] / 1e3


def main() -> int:
    b = EmbeddedBroker(log_level="WARNING").start()
    rows: list[dict[str, Any]] = []
    try:
        ac = AdminClient({"bootstrap.servers": b.kafka_bootstrap})
        variants = [(mode, nagle) for mode in ("old", "new") for nagle in (False, True)]
        for rnd in range(2):
            for mode, nagle in variants:
                topic = f"probe-{rnd}-{mode}-{int(nagle)}"
                ac.create_topics([NewTopic(topic, 1)])[topic].result(30)
                n, p50, p99 = run(b.kafka_bootstrap, topic, mode, nagle)
                rows.append(dict(round=rnd + 1, read="consume(10000, 0.05)" if mode == "old"
                                 else "poll(0.05) + consume(n, 0)", nagle_disabled=nagle,
                                 messages=n, p50_us=round(p50), p99_us=round(p99)))
                print(f"{rows[-1]['read']:26} nagle {'off' if nagle else 'on '}: {n} messages at "
                      f"200/s, p50 {p50:8.0f} us, p99 {p99:8.0f} us", flush=True)
    finally:
        b.stop()
        b.cleanup()
    (RESULTS / "kafka-latency-probe.json").write_text(json.dumps(dict(
        when=time.strftime("%Y-%m-%dT%H:%M:%S%z"), command="python -m bench.kafka_latency_probe",
        loadavg=os.getloadavg(), rows=rows), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
