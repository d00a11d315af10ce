"""Client processes for the shared-memory crash tests: python -m tests.shm.workers KIND ...

produce SOCKET TOPIC ACKED_PATH   send forever over shm (acks=written); append "offset value" of
                                 every acknowledged record to ACKED_PATH (flushed per batch)
produce_paced SOCKET TOPIC ACKED_PATH TAG TRANSPORT GAP_US
                                 one record at a time (linger 0), GAP_US apart; "offset TAG.SEQ"
                                 of each acknowledged one to ACKED_PATH
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


def produce_paced(socket: str, topic: str, acked_path: str, tag: str, transport: str,
                  gap_us: str) -> None:
    """One record at a time, each acknowledged before the next, gap_us apart (linger 0): the
    supervisor sleeps between frames, as at a paced 1,000/s. Values are TAG.SEQ."""
    p = Producer(socket=socket, transport=transport, acks="written", linger_ms=0,
                 reconnect_backoff_max_ms=200)
    gap = int(gap_us) / 1e6
    with open(acked_path, "a", buffering=1) as out:
        print("ready", flush=True)
        seq = 0
        while True:
            try:
                md = p.send(topic, f"{tag}.{seq}".encode(), partition=0).get(30)
                out.write(f"{md.offset} {tag}.{seq}\n")
            except EdgebusError:
                pass  # not acknowledged: outcome unknown, not counted
            seq += 1
            time.sleep(gap)


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
    {"produce": produce, "produce_paced": produce_paced, "consume": consume, "idle": idle}[sys.argv[1]](*sys.argv[2:])
