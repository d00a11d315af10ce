"""TopicConfig parsing and validation, and topic-name rules."""

from __future__ import annotations

import pytest

from edgebus import format as F
from edgebus.errors import InvalidRequestError, InvalidTopicError
from edgebus.log import TopicConfig, validate_topic_name

pytestmark = pytest.mark.unit


def test_defaults_round_trip() -> None:
    cfg = TopicConfig()
    entries = cfg.to_entries()
    assert entries["retention_ms"] == str(7 * 24 * 3600 * 1000)
    assert all(isinstance(v, str) for v in entries.values())
    assert TopicConfig.from_entries(entries) == cfg


def test_from_entries_overrides_base_and_accepts_kafka_names() -> None:
    base = TopicConfig(partitions=3, retention_ms=1000)
    cfg = TopicConfig.from_entries({"retention.bytes": "5000", "segment_ms": 60_000}, base=base)
    assert (cfg.partitions, cfg.retention_ms, cfg.retention_bytes, cfg.segment_ms) == (
        3, 1000, 5000, 60_000,
    )


@pytest.mark.parametrize(
    ("entries", "key"),
    [
        ({"retention_hours": "1"}, "retention_hours"),
        ({"partitions": "two"}, "partitions"),
        ({"partitions": "1.5"}, "partitions"),
        ({"partitions": True}, "partitions"),
        ({"partitions": None}, "partitions"),
        ({"partitions": "0"}, "partitions"),
        ({"partitions": F.MAX_PARTITIONS + 1}, "partitions"),
        ({"retention_ms": "-2"}, "retention_ms"),
        ({"segment.bytes": "10"}, "segment.bytes"),
        ({"segment_bytes": 2**32}, "segment_bytes"),
        ({"max_message_bytes": F.MAX_BATCH_BYTES + 1}, "max_message_bytes"),
        ({"index_interval_bytes": "-1"}, "index_interval_bytes"),
        ({"segment_ms": "0"}, "segment_ms"),
        ({"retention_bytes": "99999999999999999999"}, "retention_bytes"),
    ],
)
def test_bad_entries_name_the_key(entries: dict, key: str) -> None:
    with pytest.raises(InvalidRequestError, match=key.replace(".", r"\.")):
        TopicConfig.from_entries(entries)


def test_constructor_validates() -> None:
    with pytest.raises(InvalidRequestError, match="segment_bytes"):
        TopicConfig(segment_bytes=1)
    assert TopicConfig(retention_ms=-1, retention_bytes=-1).retention_ms == -1


@pytest.mark.parametrize("name", ["a", "orders", "sensor.temp_1-x", "A" * F.MAX_TOPIC_NAME, "a..b"])
def test_good_topic_names(name: str) -> None:
    validate_topic_name(name)


@pytest.mark.parametrize(
    "name", ["", ".", "..", ".hidden", "a/b", "a b", "ü", "A" * (F.MAX_TOPIC_NAME + 1), "__x"]
)
def test_bad_topic_names(name: str) -> None:
    with pytest.raises(InvalidTopicError):
        validate_topic_name(name)


def test_internal_names_are_reserved() -> None:
    with pytest.raises(InvalidTopicError, match="reserved"):
        validate_topic_name("__consumer_offsets")
    validate_topic_name("__consumer_offsets", internal=True)
