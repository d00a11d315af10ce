"""limits.max_topics and limits.max_partitions (docs/FORMAT.md section 3): every way of creating a
topic or partitions is bounded — the native Admin, Kafka CreateTopics / CreatePartitions
(confluent-kafka), Kafka auto-creation (kcat -P), the HTTP API — with TopicLimitError naming the
limit, Kafka's POLICY_VIOLATION, HTTP 409; after a restart the existing topics still count."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from edgebus import Admin
from edgebus.errors import TopicLimitError
from edgebus.testing import EmbeddedBroker
from tests.web.conftest import Http, error_of

pytestmark = pytest.mark.integration

LIMITS = {"max_topics": 3, "max_partitions": 4}


def topics(broker: EmbeddedBroker) -> dict[str, int]:
    with Admin(socket=broker.socket) as a:
        return {n: len(a.describe_topic(n).partitions) for n in a.list_topics()}


def ck_errors(futures: dict[str, Any]) -> dict[str, KafkaError | None]:
    out: dict[str, KafkaError | None] = {}
    for name, f in futures.items():
        e = f.exception(30)
        out[name] = e.args[0] if e is not None else None
    return out


@pytest.fixture
def limited(make_broker: Callable[..., EmbeddedBroker]) -> EmbeddedBroker:
    b = make_broker({"limits": LIMITS,
                     "http": {"enabled": True, "listen": "127.0.0.1:0"}}).start()
    b.pin_http_port()
    return b


def test_native_and_http_creation_bounded_and_counted_after_restart(limited: EmbeddedBroker) -> None:
    with Admin(socket=limited.socket) as a:
        a.create_topic("lim-a", partitions=1)
        a.create_topic("lim-b", partitions=2)
        with pytest.raises(TopicLimitError, match=r"limits\.max_partitions is 4"):
            a.create_topic("lim-c", partitions=2)
        a.create_topic("lim-c", partitions=1)
        with pytest.raises(TopicLimitError, match=r"limits\.max_topics is 3"):
            a.create_topic("lim-d", partitions=1)
    api = Http(limited.http_port)
    try:
        code, _, doc = api.post("/api/topics", {"name": "lim-http"})
        assert code == 409 and error_of(doc) == (32, "TopicLimitError"), doc
        assert "limits.max_topics" in doc["error"]["message"]
    finally:
        api.close()
    limited.restart()  # the topics on disk are counted again
    with Admin(socket=limited.socket) as a, pytest.raises(TopicLimitError):
        a.create_topic("lim-e", partitions=1)
    with Admin(socket=limited.socket) as a:  # deleting one makes room
        a.delete_topic("lim-c")
        a.create_topic("lim-e", partitions=1)
    assert topics(limited) == {"lim-a": 1, "lim-b": 2, "lim-e": 1}


def test_kafka_create_topics_and_partitions_bounded(limited: EmbeddedBroker) -> None:
    ac = AdminClient({"bootstrap.servers": limited.kafka_bootstrap})
    assert ck_errors(ac.create_topics([NewTopic("ck-a", 2), NewTopic("ck-b", 1)])) == {
        "ck-a": None, "ck-b": None}
    # Validate-only is refused as the creation would be; nothing is made.
    for validate in (True, False):
        got = ck_errors(ac.create_topics([NewTopic("ck-c", 2)], validate_only=validate))
        e = got["ck-c"]
        assert e is not None and e.code() == KafkaError.POLICY_VIOLATION, got
        assert "limits.max_partitions is 4" in e.str(), e
        got = ck_errors(ac.create_partitions([NewPartitions("ck-b", 3)], validate_only=validate))
        e = got["ck-b"]
        assert e is not None and e.code() == KafkaError.POLICY_VIOLATION, got
    assert ck_errors(ac.create_partitions([NewPartitions("ck-b", 2)])) == {"ck-b": None}
    assert ck_errors(ac.create_topics([NewTopic("ck-c", 1)]))["ck-c"].code() == (  # type: ignore[union-attr]
        KafkaError.POLICY_VIOLATION)  # 4 partitions held
    assert topics(limited) == {"ck-a": 2, "ck-b": 2}


@pytest.mark.skipif(shutil.which("kcat") is None,
                    reason="kcat is not installed (./scripts/quickstart setup test installs it as root)")
def test_kcat_auto_creation_bounded(limited: EmbeddedBroker) -> None:
    def kcat_produce(topic: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kcat", "-b", limited.kafka_bootstrap, "-P", "-t", topic,
                               "-X", "message.timeout.ms=5000"],
                              input="v\n", capture_output=True, text=True, timeout=60)

    for i in range(3):
        r = kcat_produce(f"auto-{i}")
        assert r.returncode == 0 and "failed" not in r.stderr, r.stderr
    r = kcat_produce("auto-3")  # librdkafka shows the topic's Metadata error
    assert r.returncode != 0 or "failed" in r.stderr, r
    assert "Policy violation" in r.stderr or "policy" in r.stderr.lower(), r.stderr
    assert sorted(topics(limited)) == ["auto-0", "auto-1", "auto-2"]
