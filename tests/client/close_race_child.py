"""Child process of test_close_race.py: races close() against threads that use the client, many
times in one process. Exit 0: every call after close() raised ClosedError (or, for a send
accepted before it, returned a future); 1: some other error (printed); a crash (SIGSEGV: a
write into or a read from an unmapped ring) shows as the negative signal number.

    python close_race_child.py SOCKET TOPIC RACES producer|consumer
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
import time

from edgebus import Consumer, Producer, TopicPartition
from edgebus.errors import ClosedError, OperationTimeoutError


def producer_race(sock: str, topic: str, bad: list[str]) -> None:
    p = Producer(socket=sock, transport="shm", linger_ms=0, max_in_flight=4)
    p.send(topic, b"warm", partition=0).get(10)  # the rings are mapped from here on
    go = threading.Event()

    def sender(general: bool) -> None:
        go.wait()
        try:
            for i in range(100_000):
                if general:  # headers: the general path (batch, seal, _send_inline)
                    p.send(topic, b"g", headers=[("h", b"1")], partition=0)
                elif i % 7:  # the one-step send (fast_send.py)
                    p.send(topic, b"x" * 64, partition=0)
                else:
                    p.send_batch(topic, [b"b1", b"b2"], partition=0)
        except ClosedError:
            return
        except Exception as e:  # reported by the parent
            bad.append(f"send: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=sender, args=(g,)) for g in (False, False, True, True)]
    for t in threads:
        t.start()
    go.set()
    time.sleep(random.uniform(0, 0.004))
    with contextlib.suppress(OperationTimeoutError):
        p.close(0)  # no flush wait: the mapping goes while the senders run
    for t in threads:
        t.join()
    # A send that raced close() must not have opened a new connection (its reader thread and
    # rings would outlive the producer): close() joined the only reader there was.
    left = [t.name for t in threading.enumerate() if t.name.startswith("edgebus-")]
    if left:
        bad.append(f"threads left after close(): {left}")


def consumer_race(sock: str, topic: str, bad: list[str]) -> None:
    c = Consumer(socket=sock, transport="shm")
    c.assign([TopicPartition(topic, 0)])
    c.seek_to_beginning()
    c.poll(timeout_ms=1000)  # the rings are mapped from here on
    go = threading.Event()

    def poller() -> None:
        go.wait()
        try:
            for _ in range(100_000):
                c.seek(TopicPartition(topic, 0), 0)
                c.poll(timeout_ms=50)
        except ClosedError:
            return
        except Exception as e:  # reported by the parent
            bad.append(f"poll: {type(e).__name__}: {e}")

    t = threading.Thread(target=poller)
    t.start()
    go.set()
    time.sleep(random.uniform(0, 0.004))
    c.close()
    t.join()


def main() -> int:
    sock, topic, races, kind = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    race = producer_race if kind == "producer" else consumer_race
    bad: list[str] = []
    for _ in range(races):
        race(sock, topic, bad)
        if bad:
            print("\n".join(sorted(set(bad))), flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
