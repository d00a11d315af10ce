"""Run as a test's local user: Kafka-protocol operations with kafka-python over loopback TCP
without SASL (the supervisor knows the user from /proc/net/tcp); prints one JSON line
{operation: "ok" | "hidden" | "<ErrorClass>: <message>"}.

    python -m tests.acl.kafka_ops BOOTSTRAP OP=TOPIC ...    (OP: write, read, listed, offsets)
"""

from __future__ import annotations

import json
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def run(bootstrap: str, op: str, topic: str) -> str:
    if op == "write":
        p = KafkaProducer(bootstrap_servers=bootstrap, acks=1, max_block_ms=10_000, retries=0)
        try:
            p.send(topic, b"from kafka").get(timeout=10)
        finally:
            p.close(timeout=5)
        return "ok"
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=2000, request_timeout_ms=11_000)
    try:
        if op == "listed":
            return "ok" if topic in c.topics() else "hidden"
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        if op == "offsets":
            c.end_offsets([tp])
            return "ok"
        c.seek(tp, 0)
        for _ in range(5):
            if c.poll(timeout_ms=500):
                return "ok"
        return "empty"
    finally:
        c.close()


def main() -> None:
    results = {}
    for item in sys.argv[2:]:
        op, _, topic = item.partition("=")
        try:
            results[item] = run(sys.argv[1], op, topic)
        except Exception as e:
            results[item] = f"{type(e).__name__}: {e}"
    print(json.dumps(results))


if __name__ == "__main__":
    main()
