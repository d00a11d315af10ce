"""Kafka's topic config names, and which of them edgebus keeps.

Kafka tools describe and set a topic's settings by Kafka's names. Those with an edgebus
equivalent map onto TopicConfig's keys (edgebus/log/topic_config.py) and are read and written
there. Two Kafka settings have one value here that cannot change (one replica; batches stored
uncompressed); they are described with that value, marked read-only, and setting them to anything
else is refused with INVALID_CONFIG naming what is accepted. Any other name is refused with
INVALID_CONFIG too: a setting accepted and then ignored would lie to the operator.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgebus.errors import InvalidRequestError
from edgebus.log.topic_config import TopicConfig

# DescribeConfigs config_type (Kafka's ConfigType).
T_INT, T_LONG, T_STRING, T_LIST = 3, 5, 2, 7
# DescribeConfigs config_source.
SOURCE_TOPIC, SOURCE_DEFAULT = 1, 5
# DescribeConfigs / IncrementalAlterConfigs resource types.
RESOURCE_TOPIC, RESOURCE_BROKER = 2, 4
# IncrementalAlterConfigs operations.
OP_SET, OP_DELETE, OP_APPEND, OP_SUBTRACT = 0, 1, 2, 3


@dataclass(frozen=True)
class KafkaConfig:
    name: str  # Kafka's name
    key: str  # TopicConfig field, or "" for a fixed value
    type: int
    doc: str
    fixed: str = ""  # the one value of a setting edgebus does not vary


CONFIGS: tuple[KafkaConfig, ...] = (
    KafkaConfig("cleanup.policy", "cleanup_policy", T_LIST,
                "delete (retention by time and size), compact (latest record of each key), or "
                "both (edgebus cleanup_policy)."),
    KafkaConfig("compression.type", "", T_STRING,
                "Batches are stored uncompressed, whatever the producer sent.",
                fixed="uncompressed"),
    KafkaConfig("delete.retention.ms", "delete_retention_ms", T_LONG,
                "How long a compacted topic keeps a tombstone (edgebus delete_retention_ms)."),
    KafkaConfig("max.message.bytes", "max_message_bytes", T_INT,
                "Largest record batch accepted (edgebus max_message_bytes)."),
    KafkaConfig("min.compaction.lag.ms", "min_compaction_lag_ms", T_LONG,
                "Records younger than this are never compacted away (edgebus "
                "min_compaction_lag_ms)."),
    KafkaConfig("min.insync.replicas", "", T_INT,
                "One broker, one replica: acks=all means the local fsync.", fixed="1"),
    KafkaConfig("retention.bytes", "retention_bytes", T_LONG,
                "Per partition; -1 = unlimited (edgebus retention_bytes)."),
    KafkaConfig("retention.ms", "retention_ms", T_LONG,
                "-1 = keep forever (edgebus retention_ms)."),
    KafkaConfig("segment.bytes", "segment_bytes", T_INT,
                "Roll a segment at this size (edgebus segment_bytes)."),
    KafkaConfig("segment.ms", "segment_ms", T_LONG,
                "Roll a segment at this age (edgebus segment_ms)."),
    KafkaConfig("index.interval.bytes", "index_interval_bytes", T_INT,
                "One index entry per this many bytes (edgebus index_interval_bytes)."),
    KafkaConfig("on.disk.full", "on_disk_full", T_STRING,
                "edgebus only: 'reject' or 'drop-oldest' below the disk low watermark."),
)
BY_NAME = {c.name: c for c in CONFIGS}


def value_of(c: KafkaConfig, cfg: TopicConfig) -> str:
    return c.fixed if not c.key else str(getattr(cfg, c.key))


def describe(cfg: TopicConfig, defaults: TopicConfig,
             names: tuple[str, ...] | None) -> list[dict[str, object]]:
    """DescribeConfigs rows for a topic: every known name, or those asked for that exist."""
    chosen = CONFIGS if names is None else tuple(BY_NAME[n] for n in names if n in BY_NAME)
    out = []
    for c in chosen:
        value = value_of(c, cfg)
        dynamic = bool(c.key) and value != value_of(c, defaults)
        out.append(dict(name=c.name, value=value, read_only=not c.key,
                        config_source=SOURCE_TOPIC if dynamic else SOURCE_DEFAULT,
                        is_sensitive=False, synonyms=[], config_type=c.type,
                        documentation=c.doc))
    return out


def entries_for(configs: list[tuple[str, int, str | None]], current: TopicConfig,
                defaults: TopicConfig) -> dict[str, str]:
    """TopicConfig entries from (Kafka name, operation, value) triples (CreateTopics uses
    OP_SET); InvalidRequestError naming the first one edgebus cannot keep."""
    out: dict[str, str] = {}
    for name, op, value in configs:
        c = BY_NAME.get(name)
        if c is None:
            raise InvalidRequestError(
                f"unknown or unsupported topic config {name!r}; edgebus keeps: "
                f"{', '.join(sorted(BY_NAME))}")
        if op == OP_DELETE:  # back to the default
            if c.key:
                out[c.key] = value_of(c, defaults)
            continue
        if op in (OP_APPEND, OP_SUBTRACT) and c.type != T_LIST:
            raise InvalidRequestError(f"{name} is not a list: only SET and DELETE apply")
        if op not in (OP_SET, OP_DELETE, OP_APPEND, OP_SUBTRACT):
            raise InvalidRequestError(f"unknown config operation {op} for {name}")
        if value is None:
            raise InvalidRequestError(f"{name}: a value is required")
        if not c.key:
            if op == OP_SUBTRACT or value.strip() != c.fixed:
                raise InvalidRequestError(
                    f"{name}={value!r} is not supported: edgebus accepts only "
                    f"{c.name}={c.fixed!r} ({c.doc})")
            continue
        if c.type == T_LIST:
            words = {w.strip() for w in value.split(",") if w.strip()}
            have = set(out.get(c.key, value_of(c, current)).split(","))
            words = have | words if op == OP_APPEND else have - words if op == OP_SUBTRACT \
                else words
            if not words:
                raise InvalidRequestError(f"{name} cannot be empty")
            value = ",".join(sorted(words))  # "compact,delete", edgebus's spelling of both
        _check(c, value, current)
        out[c.key] = value
    return out


def _check(c: KafkaConfig, value: str, current: TopicConfig) -> None:
    """Refuse a bad value here, naming the setting by the Kafka name the client sent (the
    topic config's own check names its edgebus field: "retention_ms")."""
    try:
        TopicConfig.from_entries({c.key: value}, base=current)
    except InvalidRequestError as e:
        raise InvalidRequestError(f"topic config {c.name}: "
                                  f"{str(e).removeprefix(f'topic config {c.key}: ')}") from None
