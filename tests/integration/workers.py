"""Client processes for the integration tests (run as `python -m tests.integration.workers ...`)."""

from __future__ import annotations

import contextlib
import json
import sys
import time

from edgebus import Consumer, Producer, TopicPartition
from edgebus.errors import BrokerUnavailableError, EdgebusError


def produce(socket: str, topic: str, producer_id: str, count: int, keys: int) -> None:
    """Send `count` records keyed k0..k{keys-1}; value = producer_id:seq."""
    with Producer(socket=socket, acks="written", linger_ms=2, batch_size=16384) as p:
        futures = []
        for i in range(count):
            futures.append(p.send(topic, f"{producer_id}:{i}".encode(), key=f"k{i % keys}".encode()))
        p.flush(60)
        for f in futures:
            f.get(60)
    print(json.dumps({"sent": count}))


def consume(socket: str, topic: str, partitions: str, out_path: str, expect: int) -> None:
    """Read the given partitions from the beginning until `expect` records; dump them as JSON."""
    tps = [TopicPartition(topic, int(p)) for p in partitions.split(",")]
    c = Consumer(socket=socket, auto_offset_reset="earliest")
    c.assign(tps)
    got: list[list] = []
    deadline = time.monotonic() + 120
    while len(got) < expect and time.monotonic() < deadline:
        for tp, recs in c.poll(timeout_ms=500).items():
            for r in recs:
                got.append([tp.partition, r.offset, r.key.decode(), r.value.decode()])
    c.close()
    with open(out_path, "w") as f:
        json.dump(got, f)


def durable_producer(socket: str, topic: str, acked_path: str, stop_path: str) -> None:
    """Send acks=durable records forever, through supervisor crashes; log each acknowledged one.

    A record whose future failed is not acknowledged: its outcome is unknown and it is not
    counted. Records are numbered so the test can check what it finds.
    """
    import os

    seq = 0
    out = open(acked_path, "a", buffering=1)  # noqa: SIM115
    p = None
    while not os.path.exists(stop_path):
        try:
            if p is None:
                p = Producer(socket=socket, acks="durable", linger_ms=1, reconnect_backoff_ms=20,
                             delivery_timeout_ms=2000)
            futs = [(seq + i, p.send(topic, f"r{seq + i}".encode(), partition=(seq + i) % 2))
                    for i in range(20)]
            seq += 20
            for n, f in futs:
                try:
                    md = f.get(10)
                    out.write(f"{n} {md.partition} {md.offset}\n")
                except EdgebusError:
                    pass
        except BrokerUnavailableError:
            if p is not None:
                with contextlib.suppress(EdgebusError):
                    p.close(1)
                p = None
            time.sleep(0.02)
    out.close()
    if p is not None:
        p.close(5)


if __name__ == "__main__":
    fn = {"produce": produce, "consume": consume, "durable_producer": durable_producer}[sys.argv[1]]
    args = sys.argv[2:]
    if fn is produce:
        produce(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif fn is consume:
        consume(args[0], args[1], args[2], args[3], int(args[4]))
    else:
        durable_producer(*args)
