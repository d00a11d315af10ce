"""A confluent-kafka producer (acks=all, idempotent) while the supervisor is SIGKILLed at random
moments and restarted: every record the producer was told is stored is there after the last
restart, and none is stored twice (retries of batches whose answer the crash swallowed are
recognised from the producer state rebuilt out of the log).

The client reaches the supervisor through a relay (kafka.advertised names it), which before some
of the kills drops the supervisor's answers: those batches are stored but never acknowledged,
so the client must retry them after the restart, which is the case idempotence is for."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer as CKProducer

from edgebus import TopicPartition
from edgebus.testing import EmbeddedBroker, free_port
from tests.kafka_listener.conftest import create_topic
from tests.kafka_listener.readers import native_read
from tests.proxy import Proxy

pytestmark = pytest.mark.crash

RECORDS = 12_000
KILLS = 3


class AnswerDroppingRelay(Proxy):
    """TCP from clients to the supervisor; `mute` drops the supervisor's answers, `cut` closes
    every relayed connection."""

    def __init__(self, target_port: int) -> None:
        self.mute = False
        super().__init__(("127.0.0.1", target_port))

    def pump(self, src: socket.socket, dst: socket.socket, to_target: bool,
             link: dict[str, Any]) -> None:
        while data := src.recv(65536):
            if to_target or not self.mute:
                dst.sendall(data)


def test_sigkill_loses_no_acknowledged_record_and_duplicates_none(
        make_broker: Callable[..., EmbeddedBroker]) -> None:
    port = free_port()  # fixed across restarts: the relay reconnects to the same address
    relay = AnswerDroppingRelay(port)
    broker = make_broker({"kafka": {"listeners": [f"127.0.0.1:{port}"],
                                    "advertised": f"127.0.0.1:{relay.port}"}}).start()
    create_topic(broker, "crash", partitions=2)
    acked: list[bytes] = []
    failed: list[Any] = []
    lock = threading.Lock()

    def on_delivery(err: Any, msg: Any) -> None:
        with lock:
            (failed if err else acked).append(err if err else msg.value())

    p = CKProducer({"bootstrap.servers": f"127.0.0.1:{relay.port}", "enable.idempotence": True,
                    "acks": "all", "linger.ms": 2, "message.timeout.ms": 120_000,
                    "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200})
    rnd = random.Random(7)
    kill_at = sorted(rnd.sample(range(1000, RECORDS - 1000), KILLS))
    for i in range(RECORDS):
        while True:
            try:
                p.produce("crash", value=b"%08d" % i, partition=i % 2, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        if i == 100:
            assert p.flush(60) == 0  # connected, producer id known: the kills land mid-stream
        if i % 50 == 0:
            p.poll(0.01)  # about 3000 records/s
        if kill_at and i == kill_at[0]:
            kill_at.pop(0)
            dropped = len(kill_at) % 2 == 0  # every other kill: answers lost before it
            if dropped:
                relay.mute = True
                p.poll(0.3)  # batches appended and fsynced, their answers dropped
            else:
                p.poll(rnd.random() * 0.02)
            broker.kill9()
            relay.cut()
            relay.mute = False
            time.sleep(rnd.random() * 0.3)
            broker.start()
    assert p.flush(120) == 0
    assert failed == [], failed[:5]
    assert len(acked) == RECORDS
    stored = native_read(broker.socket, [TopicPartition("crash", 0), TopicPartition("crash", 1)],
                         quiet_polls=3)
    dup = [v for v, n in Counter(stored).items() if n > 1]
    assert dup == [], f"{len(dup)} duplicated, e.g. {dup[:5]}"
    assert set(acked) <= set(stored), f"{len(set(acked) - set(stored))} acknowledged records lost"
