"""A link's thread outlives a target that raises while closing.

Found by a loaded CI run (the Kafka link-cut conformance test, 20 cuts): purging the in-flight
requests of the replicator's idempotent Kafka producer left it fatally failed
(_GAPLESS_GUARANTEE), `flush` in the target's close() raised, and the exception left
LinkRunner.run: the link stopped for good and the mirror never caught up. The cut that leads
there needs a loaded machine, so this test takes the target's side of it alone: close() raising
the Kafka client's own fatal exception. Before the fix the thread ended after the first session.
"""

from __future__ import annotations

import threading
import time

from confluent_kafka import KafkaError, KafkaException

from bridges.replicator.config import LinkConfig, TopicRule
from bridges.replicator.link import LinkRunner
from edgebus.errors import BrokerUnavailableError


class UnreachableTargetFailingToClose:
    """connect() fails as an unreachable target does; close() raises what confluent-kafka's
    flush raised in the CI run."""

    def __init__(self) -> None:
        self.closes = 0

    def connect(self) -> None:
        raise BrokerUnavailableError("the target is unreachable")

    def close(self) -> None:
        self.closes += 1
        raise KafkaException(KafkaError(KafkaError._GAPLESS_GUARANTEE, "unable to satisfy gap-less guarantee",
                                        fatal=True))


def test_the_link_keeps_trying_when_closing_its_target_raises() -> None:
    cfg = LinkConfig(name="l1", target="kafka", address="127.0.0.1:9", token="",
                     topics=(TopicRule("t"),))
    target = UnreachableTargetFailingToClose()
    stop = threading.Event()
    runner = LinkRunner(cfg, "gw-src", None, stop, target=target)  # type: ignore[arg-type]
    runner.thread.start()
    try:
        deadline = time.monotonic() + 30
        while runner.status.sessions < 3 and runner.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.thread.is_alive(), "the link's thread ended when closing the target raised"
        assert runner.status.sessions >= 3 and target.closes >= 2
        assert runner.status.state == "down" and "unreachable" in runner.status.last_error
    finally:
        stop.set()
        runner.thread.join(10)
