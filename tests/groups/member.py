"""Real client processes for the group tests: `python -m tests.groups.member KIND ARGS_JSON`.

A member writes one line per event to its log file, each written whole with one os.write, so a
SIGKILL leaves whole lines only:
    A <wall time> <generation> <topic>:<partition>:<start position> ...   assignment received
    R <wall time> <topic>:<partition> ...                                 partitions revoked
    P <partition> <offset>                                                record processed
    C <wall time> <partition>:<offset> ...                                commit acknowledged
"""

from __future__ import annotations

import json
import os
import sys
import time

from edgebus import Consumer, Producer
from edgebus.errors import BrokerUnavailableError


class Log:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())


def member(a: dict) -> None:
    out = Log(a["out"])
    consumer: Consumer | None = None

    class Listener:
        def on_assigned(self, tps):
            starts = " ".join(f"{tp.topic}:{tp.partition}:{consumer.position(tp)}" for tp in sorted(tps))
            out.write(f"A {time.time():.3f} {consumer._group.generation} {starts}")

        def on_revoked(self, tps):
            out.write(f"R {time.time():.3f} " + " ".join(f"{t}:{p}" for t, p in sorted(tps)))

    def committed(offsets, err):
        if err is None:
            out.write(f"C {time.time():.3f} " + " ".join(f"{tp.partition}:{o.offset}"
                                                         for tp, o in sorted(offsets.items())))

    consumer = Consumer(group_id=a["group"], socket=a["socket"], auto_offset_reset="earliest",
                        enable_auto_commit=a.get("auto_commit", True),
                        auto_commit_interval_ms=a.get("auto_commit_interval_ms", 300),
                        session_timeout_ms=a.get("session_timeout_ms", 1500),
                        heartbeat_interval_ms=a.get("heartbeat_interval_ms", 200),
                        max_poll_interval_ms=a.get("max_poll_interval_ms", 10_000),
                        partition_assignment_strategy=a.get("assignors", ["range"]),
                        client_id=a.get("client_id", "member"))
    consumer.subscribe([a["topic"]], listener=Listener())
    delay = a.get("process_delay_s", 0.0)
    while not os.path.exists(a["stop"]):
        try:
            batch = consumer.poll(timeout_ms=100)
        except BrokerUnavailableError:
            time.sleep(0.05)
            continue
        lines = [f"P {tp.partition} {r.offset}" for tp, recs in batch.items() for r in recs]
        if lines:
            os.write(out.fd, ("\n".join(lines) + "\n").encode())
            if delay:
                time.sleep(delay)
        if not a.get("auto_commit", True) and lines:
            consumer.commit_async(callback=committed)
    consumer.close()
    out.write(f"X {time.time():.3f}")


def producer(a: dict) -> None:
    """Send `count` records spread by key over the topic's partitions, about `rate` per second."""
    with Producer(socket=a["socket"], acks="written", linger_ms=2) as p:
        futures = []
        t0 = time.monotonic()
        for i in range(a["count"]):
            futures.append(p.send(a["topic"], f"{a['tag']}:{i}".encode(), key=f"{a['tag']}{i}".encode()))
            if i % 50 == 49:
                ahead = (i + 1) / a["rate"] - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        p.flush(60)
        for f in futures:
            f.get(60)
    print(json.dumps({"sent": a["count"]}), flush=True)


if __name__ == "__main__":
    {"member": member, "producer": producer}[sys.argv[1]](json.loads(sys.argv[2]))
