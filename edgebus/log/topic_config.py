"""Per-topic settings and topic-name rules.

A TopicConfig round-trips through `to_entries` / `from_entries` as plain string pairs, which is how
topics.json, the admin protocol and the CLI carry it. Every value is range-checked on construction,
and every error names the offending key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

from edgebus import format as F
from edgebus.errors import InvalidRequestError, InvalidTopicError

I64_MAX = 2**63 - 1
# Index entries store batch positions as u32, and every batch except an oversized first one starts
# below segment_bytes, so this bound keeps positions representable.
MAX_SEGMENT_BYTES = 2**32 - 1
DAY_MS = 24 * 3600 * 1000

# key -> (min, max). -1 is inside the range where it means "unlimited".
_RANGES: dict[str, tuple[int, int]] = {
    "partitions": (1, F.MAX_PARTITIONS),
    "retention_ms": (-1, I64_MAX),
    "retention_bytes": (-1, I64_MAX),
    "segment_bytes": (F.BATCH_HEADER_SIZE, MAX_SEGMENT_BYTES),
    "segment_ms": (1, I64_MAX),
    "max_message_bytes": (F.BATCH_HEADER_SIZE, F.MAX_BATCH_BYTES),
    "index_interval_bytes": (0, 2**31 - 1),
    "delete_retention_ms": (0, I64_MAX),
    "min_compaction_lag_ms": (0, I64_MAX),
}
# Kafka's dotted spellings are accepted on input so that Kafka users' habits work.
_ALIASES = {
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
    "max.message.bytes": "max_message_bytes",
    "index.interval.bytes": "index_interval_bytes",
    "on.disk.full": "on_disk_full",
    "cleanup.policy": "cleanup_policy",
    "delete.retention.ms": "delete_retention_ms",
    "min.compaction.lag.ms": "min_compaction_lag_ms",
}
# What appends to a topic do while the data directory's free space is below the low watermark
# (edgebus/server/disk.py): refuse them with DiskFullError, or delete the topic's oldest segments.
DISK_FULL_REJECT = "reject"
DISK_FULL_DROP_OLDEST = "drop-oldest"
# key -> allowed values, for the settings that are words rather than integers.
# cleanup_policy (Kafka's cleanup.policy): "delete" = retention by time and size; "compact" = the
# log cleaner keeps the latest record of each key (edgebus/log/cleaner.py) and nothing expires;
# "compact,delete" = both.
CLEANUP_DELETE, CLEANUP_COMPACT, CLEANUP_BOTH = "delete", "compact", "compact,delete"
_CHOICES: dict[str, tuple[str, ...]] = {
    "on_disk_full": (DISK_FULL_REJECT, DISK_FULL_DROP_OLDEST),
    "cleanup_policy": (CLEANUP_DELETE, CLEANUP_COMPACT, CLEANUP_BOTH),
}
_INT_RE = re.compile(r"-?[0-9]{1,19}")
# Free-form words, each with the pattern it must match ("" = unset).
# incarnation: made once when a topic is created (32 hex digits, random); a mirror carries its
#   source's, so a source deleted and created again is told apart from the one mirrored.
# mirror_of: "<node>/<topic>" of the source a mirror copies; "" for an ordinary topic. A mirror
#   takes appends only from its replication link (docs/REPLICATION.md).
_STRINGS: dict[str, re.Pattern[str]] = {
    "incarnation": re.compile(r"(|[0-9a-f]{32})"),
    "mirror_of": re.compile(r"(|[A-Za-z0-9._-]{1,64}/[A-Za-z0-9._-]{1,249})"),
}


@dataclass
class TopicConfig:
    partitions: int = 1
    retention_ms: int = 7 * DAY_MS  # -1 = keep forever
    retention_bytes: int = -1  # per partition; -1 = unlimited
    segment_bytes: int = 64 * 1024 * 1024  # roll when the active segment would exceed this
    segment_ms: int = 7 * DAY_MS  # roll when the active segment's first batch is older than this
    max_message_bytes: int = 1024 * 1024  # largest batch accepted
    index_interval_bytes: int = 4096  # one sparse index entry per this many bytes of log
    on_disk_full: str = DISK_FULL_REJECT  # policy below the disk low watermark (see _CHOICES)
    cleanup_policy: str = CLEANUP_DELETE  # see _CHOICES
    delete_retention_ms: int = DAY_MS  # a compacted topic keeps a tombstone this long
    min_compaction_lag_ms: int = 0  # records younger than this are never compacted away
    incarnation: str = ""  # see _STRINGS; LogManager.create_topic makes one
    mirror_of: str = ""  # see _STRINGS

    # Not settings but the topic's identity: never in a config file, never altered (promote()
    # clears mirror_of).
    IDENTITY = ("incarnation", "mirror_of")

    def __post_init__(self) -> None:
        for name, (lo, hi) in _RANGES.items():
            value = getattr(self, name)
            if type(value) is not int:
                raise InvalidRequestError(f"topic config {name}: {value!r} is not an integer")
            if not lo <= value <= hi:
                raise InvalidRequestError(f"topic config {name}: {value} is outside [{lo}, {hi}]")
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise InvalidRequestError(
                    f"topic config {name}: {value!r} is not one of {', '.join(allowed)}")
        for name, pattern in _STRINGS.items():
            value = getattr(self, name)
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise InvalidRequestError(f"topic config {name}: {value!r} is not valid")

    @property
    def is_mirror(self) -> bool:
        return bool(self.mirror_of)

    @property
    def compacted(self) -> bool:
        return self.cleanup_policy in (CLEANUP_COMPACT, CLEANUP_BOTH)

    @property
    def expires(self) -> bool:
        """Whether time and size retention apply (cleanup_policy includes "delete")."""
        return self.cleanup_policy in (CLEANUP_DELETE, CLEANUP_BOTH)

    def to_entries(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_entries(
        cls, d: Mapping[str, str | int], base: TopicConfig | None = None
    ) -> TopicConfig:
        """A config from key/value pairs; keys not given keep `base`'s values (or the defaults)."""
        values = (base or cls()).to_entries()
        parsed: dict[str, int | str] = {
            k: v if k in _CHOICES or k in _STRINGS else int(v) for k, v in values.items()
        }
        for key, raw in d.items():
            name = _ALIASES.get(key, key)
            if name in _STRINGS:
                text = raw.strip() if isinstance(raw, str) else raw
                if not isinstance(text, str) or not _STRINGS[name].fullmatch(text):
                    raise InvalidRequestError(f"topic config {key}: {raw!r} is not valid")
                parsed[name] = text
                continue
            if name in _CHOICES:
                word = raw.strip() if isinstance(raw, str) else raw
                if name == "cleanup_policy" and isinstance(word, str):  # Kafka's list, any order
                    word = ",".join(sorted(w.strip() for w in word.split(",")))
                if word not in _CHOICES[name]:
                    raise InvalidRequestError(
                        f"topic config {key}: {raw!r} is not one of {', '.join(_CHOICES[name])}")
                parsed[name] = word
                continue
            if name not in _RANGES:
                raise InvalidRequestError(f"unknown topic config key {key!r}")
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise InvalidRequestError(f"topic config {key}: {raw!r} is not an integer")
            if isinstance(raw, str):
                text = raw.strip()
                if not _INT_RE.fullmatch(text):
                    raise InvalidRequestError(f"topic config {key}: {raw!r} is not an integer")
                raw = int(text)
            lo, hi = _RANGES[name]
            if not lo <= raw <= hi:
                raise InvalidRequestError(f"topic config {key}: {raw} is outside [{lo}, {hi}]")
            parsed[name] = raw
        return cls(**parsed)  # type: ignore[arg-type]


def new_incarnation() -> str:
    """A topic's incarnation id: 128 random bits, so two creations never share one."""
    return os.urandom(16).hex()  # not `secrets`: it loads OpenSSL (~4 MB RSS)


def validate_topic_name(name: str, internal: bool = False) -> None:
    """Raise InvalidTopicError unless `name` is safe as a directory name and not reserved.

    Names starting with "__" are reserved for edgebus's own topics (internal=True).
    """
    if not isinstance(name, str):
        raise InvalidTopicError(f"topic name must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidTopicError("topic name is empty")
    if len(name) > F.MAX_TOPIC_NAME:
        raise InvalidTopicError(
            f"topic name is {len(name)} characters long, at most {F.MAX_TOPIC_NAME} allowed"
        )
    bad = sorted(set(name) - F.TOPIC_NAME_CHARS)
    if bad:
        raise InvalidTopicError(
            f"topic name {name!r} contains {''.join(bad)!r}; "
            "allowed: letters, digits, '.', '_', '-'"
        )
    if name in (".", ".."):
        raise InvalidTopicError(f"topic name {name!r} is not allowed")
    if name.startswith("."):
        raise InvalidTopicError(f"topic name {name!r} may not start with '.'")
    if name.startswith("__") and not internal:
        raise InvalidTopicError(f"topic name {name!r}: names starting with '__' are reserved")
