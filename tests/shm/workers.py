"""Client processes for the shared-memory crash tests: python -m tests.shm.workers KIND ...

produce SOCKET TOPIC ACKED_PATH   send forever over shm (acks=written); append "offset value" of
                                 every acknowledged record to ACKED_PATH (flushed per batch)
consume SOCKET TOPIC             read forever over shm from the beginning, printing nothing
idle SOCKET N                    open N shm Admin connections and sleep
"""

from __future__ import annotations

import sys
import time

from edgebus import Admin, Consumer, Producer
from edgebus.errors import EdgebusError


def produce(socket: str, topic: str, acked_path: str) -> None:
    seq = 0
    with open(acked_path, "a", buffering=1) as out:
        p = Producer(socket=socket, transport="shm", acks="written", linger_ms=1,
                     batch_size=4096, reconnect_backoff_max_ms=200)
        print("ready", flush=True)
        while True:
            futures = []
            for _ in range(200):
                futures.append((seq, p.send(topic, f"v{seq}".encode())))
                seq += 1
            lines = []
            for s, f in futures:
                try:
                    md = f.get(30)
                except EdgebusError:
                    continue  # not acknowledged: outcome unknown, not counted
                lines.append(f"{md.offset} v{s}\n")
            out.write("".join(lines))
            out.flush()


def consume(socket: str, topic: str) -> None:
    c = Consumer(topic, socket=socket, transport="shm", auto_offset_reset="earliest")
    print("ready", flush=True)
    while True:
        c.poll(200, max_records=10_000)


def idle(socket: str, n: str) -> None:
    clients = [Admin(socket=socket, transport="shm") for _ in range(int(n))]
    print("ready", flush=True)
    time.sleep(3600)
    del clients


if __name__ == "__main__":
    {"produce": produce, "consume": consume, "idle": idle}[sys.argv[1]](*sys.argv[2:])
