"""The issue's proof, in one run: producers never stop while the link is cut 20 times (half of
the cuts half-open), the replicator is killed with SIGKILL 10 times, the source supervisor 5
times and the destination supervisor 5 times, in a shuffled order. Afterwards the destination
holds exactly the source's records, partition by partition, compared record by record: the
same offsets (dense: no gap), timestamps, keys, values and headers, none twice; and every
record whose produce was acknowledged is there."""

from __future__ import annotations

import random
import threading
import time

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.errors import EdgebusError

from .conftest import wait_for
from .relay import Relay
from .test_conformance import in_step

pytestmark = [pytest.mark.integration, pytest.mark.crash]

CUTS, REPLICATOR_KILLS, SOURCE_KILLS, DESTINATION_KILLS = 20, 10, 5, 5
PARTITIONS = 2


def records(sock: str, topic: str) -> dict[int, list[tuple]]:
    """Every record of every partition, in offset order, as a consumer sees it."""
    out: dict[int, list[tuple]] = {p: [] for p in range(PARTITIONS)}
    with Consumer(socket=sock, auto_offset_reset="earliest", consumer_timeout_ms=1500) as c:
        c.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        for r in c:
            out[r.partition].append((r.offset, r.timestamp, r.key, r.value, tuple(r.headers)))
    return out


# About 50 s: the plain peer only (the TLS transport gets the same cuts and kills in
# test_conformance.py's link-cut and crash tests).
@pytest.mark.parametrize("destination", ["peer"], indirect=True)
def test_cuts_and_kills_of_every_process_leave_an_exact_mirror(source, destination,
                                                               make_replicator):
    relay = Relay(("127.0.0.1", destination.port))
    with Admin(socket=source.socket) as a:
        a.create_topic("chaos", PARTITIONS)
    stop = threading.Event()
    acked: list[bytes] = []  # values whose produce was acknowledged (acks="written")

    def keep_producing() -> None:
        n = 0
        while not stop.is_set():
            try:
                with Producer(socket=source.socket, linger_ms=2, acks="written") as p:
                    while not stop.is_set():
                        batch = [f"c{n + i}".encode() for i in range(40)]
                        futures = [p.send("chaos", v, key=str(i % 7).encode(), headers=[("n", v)])
                                   for i, v in enumerate(batch)]
                        n += len(batch)
                        p.flush(10)
                        for v, f in zip(batch, futures, strict=True):
                            try:
                                f.get(0)
                            except EdgebusError:
                                continue  # not acknowledged (the source died): may be lost
                            acked.append(v)  # acknowledged as written
                        time.sleep(0.01)
            except EdgebusError:
                time.sleep(0.1)  # the source is being killed or restarted

    t = threading.Thread(target=keep_producing, daemon=True)
    t.start()
    rep = make_replicator(["chaos"], address=relay.address, heartbeat_s=0.3).start()
    events = (["cut"] * (CUTS // 2) + ["half-open"] * (CUTS - CUTS // 2)
              + ["replicator"] * REPLICATOR_KILLS + ["source"] * SOURCE_KILLS
              + ["destination"] * DESTINATION_KILLS)
    random.Random(11).shuffle(events)  # a fixed order: a failure can be run again
    try:
        for what in events:
            time.sleep(0.3)
            if what == "cut":
                relay.cut()
            elif what == "half-open":
                relay.blackhole = True  # nothing forwarded, nothing closed
                time.sleep(0.7)  # longer than two heartbeats: only the heartbeat notices
                relay.blackhole = False
                relay.cut()
            elif what == "replicator":
                rep.kill9()
                rep.start()
            elif what == "source":
                source.kill9()
                source.start()
            else:
                destination.kill9()
                destination.restart()
    finally:
        stop.set()
        t.join(30)
    assert len(acked) > 1000, "the test shipped real traffic"
    wait_for(lambda: in_step(source, destination, "chaos", PARTITIONS), timeout=90,
             what=f"the mirror to equal the source after {len(events)} cuts and kills:\n"
                  f"{rep.log()[-3000:]}")
    src = records(source.socket, "chaos")
    dst = records(destination.broker.socket, "chaos")
    for p in range(PARTITIONS):
        assert [r[0] for r in src[p]] == list(range(len(src[p]))), "dense offsets on the source"
        assert dst[p] == src[p], f"partition {p}: the mirror differs record by record"
    on_mirror = {r[3] for p in range(PARTITIONS) for r in dst[p]}
    assert set(acked) <= on_mirror, "an acknowledged record is missing"
    assert relay.connections >= CUTS // 2, "the replicator reconnected after the cuts"
    relay.close()
