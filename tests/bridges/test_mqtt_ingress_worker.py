"""The ingress worker on a real supervisor, with the MQTT side scripted (messages handed in, acks
recorded): a lost append is retried first and the acks wait for it; a record too large for its
topic is dead-lettered and the others appended. SIGSTOP orders the events (a record is sent and
stays unanswered), SIGKILL loses it with the connection."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from mqtt_helpers import read_all

from bridges.mqtt.clients import EdgebusClient
from bridges.mqtt.config import config_from_mapping
from bridges.mqtt.ingress import Ingress
from bridges.mqtt.metrics import Metrics
from edgebus import Admin

pytestmark = [pytest.mark.integration, pytest.mark.crash]


@dataclass
class Msg:
    topic: str
    payload: bytes
    mid: int
    qos: int = 1
    retain: bool = False
    dup: bool = False
    properties: Any = None


class FakeConn:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, generation: int, mid: int, qos: int) -> bool:
        self.acked.append(mid)
        return True

    def wake(self) -> None:
        pass


# The topic takes records up to this size (max_message_bytes), so a larger one is too large.
TOPIC_LIMIT = 4096


@pytest.fixture
def worker(broker) -> Any:
    with Admin(socket=broker.socket, transport="socket") as admin:
        admin.create_topic("t", 1, config={"max_message_bytes": TOPIC_LIMIT})
        admin.create_topic("dlq", 1)
    cfg = config_from_mapping({
        "edgebus": {"socket": broker.socket, "acks": "written", "retry_backoff_ms": 10,
                    "retry_backoff_max_ms": 20},
        "dead_letter": {"topic": "dlq"},
        "ingress": [{"filter": "d/+", "topic": "t", "key": {"topic_level": 1}}],
    })
    metrics = Metrics()
    edgebus = EdgebusClient(cfg, metrics)
    ing = Ingress(cfg, metrics, edgebus)
    conn = FakeConn()
    ing.conn = conn
    ing.on_connected(1, False)
    stop = threading.Event()
    t = threading.Thread(target=ing.run, args=(stop,), daemon=True)
    t.start()
    yield ing, broker, conn
    if broker.pid is not None:
        os.kill(broker.pid, signal.SIGCONT)
    stop.set()
    with ing._cond:
        ing._cond.notify_all()
    t.join(5)
    edgebus.close()


def wait(pred: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def values(broker: Any, topic: str) -> list[bytes]:
    return [r.value for r in read_all(broker.socket, topic, 0, timeout=5, quiet=0.3)]


def test_a_failed_batch_is_retried_first_and_acks_wait(worker: Any) -> None:
    ing, broker, conn = worker
    ing.on_message(Msg("d/a", b"0", mid=10), 1, False)
    wait(lambda: conn.acked == [10], "the first append and its ack")
    os.kill(broker.pid, signal.SIGSTOP)
    ing.on_message(Msg("d/a", b"1", mid=1), 1, False)  # sent, never answered
    time.sleep(0.2)
    for i in (2, 3):  # arrive while the first batch is in flight: they wait behind it
        ing.on_message(Msg("d/a", b"%d" % i, mid=i), 1, False)
    time.sleep(0.1)
    broker.kill9()  # the batch in flight is lost with the connection
    time.sleep(0.1)
    assert conn.acked == [10]  # nothing acknowledged before its append
    broker.start()
    wait(lambda: conn.acked == [10, 1, 2, 3], "the acks, in arrival order")
    assert values(broker, "t") == [b"0", b"1", b"2", b"3"]  # the failed record first, then the rest
    ing.sync_metrics()
    assert ing.metrics.get("in_append_retries") == 1


def test_a_too_large_batch_is_split_and_the_culprit_dead_lettered(worker: Any) -> None:
    ing, broker, conn = worker
    huge = b"h" * (TOPIC_LIMIT + 1)
    ing.on_message(Msg("d/a", b"x", mid=1), 1, False)
    ing.on_message(Msg("d/a", b"small", mid=2), 1, False)
    ing.on_message(Msg("d/a", huge, mid=3), 1, False)
    ing.on_message(Msg("d/a", b"after", mid=4), 1, False)
    wait(lambda: conn.acked == [1, 2, 3, 4], "every message acknowledged")
    assert values(broker, "t") == [b"x", b"small", b"after"]
    assert values(broker, "dlq") == [huge]
    assert ing.metrics.get("in_dead_lettered") == 1
