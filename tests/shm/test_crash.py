"""SIGKILL with shared-memory rings in use: of a producer mid-write, of a consumer mid-read, of the
supervisor. Afterwards: nothing in /dev/shm, the supervisor holds no mapping or descriptor of the
dead client, the other clients kept working, and every acknowledged record is in the log.

No figure of time is asserted (the machine is shared): a stalled client or a consumer that misses
the supervisor's death hangs, and the bounds on those waits are generous enough (30-60 s) never
to be what is tested."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.testing import wait_for
from tests.shm.helpers import dev_shm_entries, memfd_mappings, open_fds

pytestmark = pytest.mark.crash
ROOT = Path(__file__).resolve().parents[2]


def spawn(*args: str) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, "-m", "tests.shm.workers", *args], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = p.stdout.readline()
    assert line.strip() == b"ready", p.stderr.read().decode()
    return p


def kill9(p: subprocess.Popen[bytes]) -> None:
    p.send_signal(signal.SIGKILL)
    p.wait(10)


def read_all(sock: str, topic: str, partition: int = 0) -> dict[int, bytes]:
    c = Consumer(socket=sock, transport="shm", auto_offset_reset="earliest")
    tp = TopicPartition(topic, partition)
    c.assign([tp])
    c.seek_to_beginning(tp)
    end = c.end_offsets([tp])[tp]
    out: dict[int, bytes] = {}
    deadline = time.monotonic() + 60
    while c.position(tp) < end and time.monotonic() < deadline:
        for recs in c.poll(500, max_records=100_000).values():
            out.update((r.offset, r.value) for r in recs)
    c.close()
    return out


def acked(path: Path) -> dict[int, bytes]:
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:  # the last line may be torn by the kill
            out[int(parts[0])] = parts[1].encode()
    return out


class Steady:
    """Another client pair that must keep working throughout: produce-then-consume rounds, each
    of which must complete (a client stalled behind the dead one never gets its record)."""

    def __init__(self, sock: str, topic: str) -> None:
        self.p = Producer(socket=sock, transport="shm", linger_ms=0)
        self.c = Consumer(socket=sock, transport="shm", auto_offset_reset="earliest")
        self.tp = TopicPartition(topic, 0)
        self.c.assign([self.tp])
        self.topic = topic

    def round(self) -> None:
        self.p.send(self.topic, b"ping").get(30)
        wait_for(lambda: sum(len(v) for v in self.c.poll(1000).values()), 60,
                 "the other client's record (it stalled)")

    def close(self) -> None:
        self.p.close()
        self.c.close()


def test_sigkill_producer_mid_write(broker, tmp_path):
    with Admin(socket=broker.socket) as a:
        a.create_topic("crash", 1)
        a.create_topic("steady", 1)
    shm_before = dev_shm_entries()
    steady = Steady(broker.socket, "steady")
    steady.round()  # its rings exist before the baseline is taken
    base_maps = memfd_mappings(broker.pid)
    for i in range(3):
        log = tmp_path / f"acked{i}.txt"
        p = spawn("produce", broker.socket, "crash", str(log))
        wait_for(lambda log=log: log.exists() and log.stat().st_size > 1000, 30,
                 "the producer's first acknowledged records")
        steady.round()
        kill9(p)  # mid-write: it sends as fast as it can
        steady.round()
        wait_for(lambda: memfd_mappings(broker.pid) == base_maps, 30, "the rings reclaimed")
    assert dev_shm_entries() == shm_before
    log_records = read_all(broker.socket, "crash")
    for i in range(3):
        for off, value in acked(tmp_path / f"acked{i}.txt").items():
            assert log_records.get(off) == value, f"acknowledged record {off} lost"
    steady.close()


def test_sigkill_consumer_mid_read(broker):
    with Admin(socket=broker.socket) as a:
        a.create_topic("crash", 1)
        a.create_topic("steady", 1)
    with Producer(socket=broker.socket) as p:
        for _ in range(20):
            p.send_batch("crash", [b"y" * 1000] * 1000)
        p.flush(30)
    shm_before = dev_shm_entries()
    steady = Steady(broker.socket, "steady")
    steady.round()  # its rings exist before the baseline is taken
    base_maps = memfd_mappings(broker.pid)
    base_fds = open_fds(broker.pid)
    for _ in range(3):
        c = spawn("consume", broker.socket, "crash")
        time.sleep(0.3)  # reading 20 MB in a loop
        steady.round()
        kill9(c)
        steady.round()
        wait_for(lambda: memfd_mappings(broker.pid) == base_maps, 30, "the rings reclaimed")
        wait_for(lambda: open_fds(broker.pid) <= base_fds, 30, "the descriptors reclaimed")
    assert dev_shm_entries() == shm_before
    steady.close()


def test_sigkill_supervisor_under_shm_traffic(broker, tmp_path):
    with Admin(socket=broker.socket) as a:
        a.create_topic("crash", 1)
    shm_before = dev_shm_entries()
    log = tmp_path / "acked.txt"
    p = spawn("produce", broker.socket, "crash", str(log))
    c = spawn("consume", broker.socket, "crash")
    wait_for(lambda: log.exists() and log.stat().st_size > 5000, 30,
             "the producer's first acknowledged records")
    broker.kill9()
    time.sleep(0.5)
    kill9(p)  # the producer's view of what was acknowledged is now final
    kill9(c)
    assert dev_shm_entries() == shm_before
    broker.start()
    records = read_all(broker.socket, "crash")
    want = acked(log)
    assert want, "the producer had acknowledged nothing"
    missing = [off for off, v in want.items() if records.get(off) != v]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
    assert dev_shm_entries() == shm_before


def test_clients_notice_a_dead_supervisor_at_once(broker):
    with Admin(socket=broker.socket) as a:
        a.create_topic("t", 1)
    c = Consumer(socket=broker.socket, transport="shm")
    c.assign([TopicPartition("t", 0)])
    c.poll(0)
    import threading

    errors: list[BaseException] = []

    def long_poll() -> None:
        try:
            c.poll(600_000)
        except Exception as e:
            errors.append(e)

    t = threading.Thread(target=long_poll, daemon=True)
    t.start()
    time.sleep(0.3)  # parked in a long poll, asleep on its eventfd
    broker.kill9()
    # "At once": the poll ends with an error, long before its own 10 minutes could end it.
    t.join(60)
    assert not t.is_alive() and errors, "the consumer did not notice the supervisor died"
    c.close()
