"""The ingress worker against a scripted producer (no broker, no supervisor): retries keep the
order and hold the acks; a batch refused as too large is split and the culprit dead-lettered."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from bridges.mqtt.config import config_from_mapping
from bridges.mqtt.ingress import Ingress
from bridges.mqtt.metrics import Metrics
from edgebus.errors import BrokerUnavailableError, RecordTooLargeError

pytestmark = pytest.mark.unit


@dataclass
class Msg:
    topic: str
    payload: bytes
    mid: int
    qos: int = 1
    retain: bool = False
    dup: bool = False
    properties: Any = None


class FakeFuture:
    def __init__(self) -> None:
        self.cb: Callable[[Any], None] | None = None

    def add_callback(self, fn: Callable[[Any], None]) -> FakeFuture:
        self.cb = fn
        return self


class FakeProducer:
    """Records every send_batch; the test decides each outcome (a list, or an exception)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, list[bytes], FakeFuture]] = []
        self.lock = threading.Lock()

    def send_batch(self, topic: str, values: list[bytes], keys: Any = None,
                   partition: int | None = None, record_headers: Any = None) -> FakeFuture:
        f = FakeFuture()
        with self.lock:
            self.sent.append((topic, partition or 0, list(values), f))
        return f

    def complete(self, i: int, outcome: Any) -> None:
        _, _, values, f = self.sent[i]
        assert f.cb is not None
        f.cb(outcome if isinstance(outcome, BaseException) else [None] * len(values))


class FakeEdgebus:
    def __init__(self, producer: FakeProducer) -> None:
        self.producer = producer

    def connect(self, stop: threading.Event) -> FakeProducer:
        return self.producer

    def partitions(self, topic: str) -> int:
        return 1


class FakeConn:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, generation: int, mid: int, qos: int) -> bool:
        self.acked.append(mid)
        return True

    def wake(self) -> None:
        pass


@pytest.fixture
def worker() -> Any:
    cfg = config_from_mapping({
        "edgebus": {"retry_backoff_ms": 10, "retry_backoff_max_ms": 20},
        "dead_letter": {"topic": "dlq"},
        "ingress": [{"filter": "d/+", "topic": "t", "key": {"topic_level": 1}}],
    })
    producer = FakeProducer()
    ing = Ingress(cfg, Metrics(), FakeEdgebus(producer))  # type: ignore[arg-type]
    conn = FakeConn()
    ing.conn = conn
    ing.on_connected(1, False)
    stop = threading.Event()
    t = threading.Thread(target=ing.run, args=(stop,), daemon=True)
    t.start()
    yield ing, producer, conn
    stop.set()
    with ing._cond:
        ing._cond.notify_all()
    t.join(5)


def wait(pred: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_a_failed_batch_is_retried_first_and_acks_wait(worker: Any) -> None:
    ing, producer, conn = worker
    ing.on_message(Msg("d/a", b"1", mid=1), 1, False)
    wait(lambda: len(producer.sent) == 1, "the first batch")
    for i in (2, 3):  # arrive while the first batch is in flight: they wait in the lane
        ing.on_message(Msg("d/a", b"%d" % i, mid=i), 1, False)
    time.sleep(0.05)
    assert len(producer.sent) == 1  # one batch in flight per partition
    producer.complete(0, BrokerUnavailableError("the supervisor restarted"))
    wait(lambda: len(producer.sent) == 2, "the retry")
    assert producer.sent[1][2] == [b"1", b"2", b"3"]  # the failed record first, then the rest
    assert conn.acked == []  # nothing acknowledged before its append
    producer.complete(1, "ok")
    wait(lambda: conn.acked == [1, 2, 3], "the acks, in arrival order")
    assert ing.metrics.get("in_append_retries") == 1


def test_a_too_large_batch_is_split_and_the_culprit_dead_lettered(worker: Any) -> None:
    ing, producer, conn = worker
    ing.on_message(Msg("d/a", b"x", mid=1), 1, False)
    wait(lambda: len(producer.sent) == 1, "the first batch")
    ing.on_message(Msg("d/a", b"small", mid=2), 1, False)
    ing.on_message(Msg("d/a", b"huge", mid=3), 1, False)
    producer.complete(0, "ok")
    wait(lambda: len(producer.sent) == 2, "the second batch")
    assert producer.sent[1][2] == [b"small", b"huge"]
    producer.complete(1, RecordTooLargeError("batch of 2 records too large"))
    wait(lambda: len(producer.sent) == 3, "the first single")
    assert producer.sent[2][2] == [b"small"]
    producer.complete(2, "ok")
    wait(lambda: len(producer.sent) == 4, "the second single")
    assert producer.sent[3][2] == [b"huge"]
    producer.complete(3, RecordTooLargeError("record too large for topic t"))
    wait(lambda: len(producer.sent) == 5, "the dead letter")
    topic, _, values, _ = producer.sent[4]
    assert (topic, values) == ("dlq", [b"huge"])
    producer.complete(4, "ok")
    wait(lambda: conn.acked == [1, 2, 3], "every message acknowledged")
    assert ing.metrics.get("in_dead_lettered") == 1
