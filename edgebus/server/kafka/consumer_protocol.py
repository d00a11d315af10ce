"""Kafka's consumer protocol: the bytes inside JoinGroup's protocol metadata (a member's
subscription) and SyncGroup's / DescribeGroups' assignment.

Both are an int16 version followed by the struct of that version (kio's generated
`ConsumerProtocolSubscription` / `ConsumerProtocolAssignment`, from Kafka's JSON specs). As Kafka
does, a version newer than the newest we know is read with the newest schema and its trailing
fields ignored: later versions only add fields at the end.

edgebus computes assignments in the coordinator (edgebus/server/groups/coordinator.py), so this
module decodes subscriptions and encodes assignments (and encodes a subscription for
DescribeGroups' member metadata). In a leader-assigned group (groups/leader.py) the bytes are
the clients' own and are passed on unchanged; they are decoded only to show an operator which
partitions a member holds (`decode_assignment`), and bytes that do not decode are simply shown
as nothing.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from kio.schema.consumer_protocol_assignment.v0 import data as assign_v0
from kio.schema.consumer_protocol_subscription.v0 import data as sub_v0
from kio.schema.consumer_protocol_subscription.v1 import data as sub_v1
from kio.schema.consumer_protocol_subscription.v2 import data as sub_v2
from kio.schema.consumer_protocol_subscription.v3 import data as sub_v3
from kio.schema.types import TopicName
from kio.static.primitive import i32

from edgebus.errors import InvalidRequestError
from edgebus.server.kafka.lengths import check as check_lengths

# Subscription schemas by version; newer versions are read with the last one.
_SUBSCRIPTIONS: tuple[Any, ...] = (
    sub_v0.ConsumerProtocolSubscription, sub_v1.ConsumerProtocolSubscription,
    sub_v2.ConsumerProtocolSubscription, sub_v3.ConsumerProtocolSubscription,
)
# Assignment v0 is what every client reads (v1-v3 add nothing a member needs from us), so it is
# what we send whatever version the member subscribed with.
_ASSIGNMENT = assign_v0.ConsumerProtocolAssignment


# kio.serial is imported at first use, not at start: it imports asyncio and ssl (codec.py).
@cache
def _reader(i: int) -> Any:
    from kio.serial import entity_reader

    return entity_reader(_SUBSCRIPTIONS[i])


@cache
def _assignment_reader() -> Any:
    from kio.serial import entity_reader

    return entity_reader(_ASSIGNMENT)


@cache
def _writer(entity: type) -> Any:
    from kio.serial import entity_writer

    return entity_writer(entity)


# Topics in one subscription: a member lists each topic it consumes (a regex is resolved by the
# client); bounds what one JoinGroup can make the coordinator hold.
MAX_SUBSCRIBED_TOPICS = 10_000


@dataclass(frozen=True)
class Subscription:
    topics: tuple[str, ...]
    owned: tuple[tuple[str, int], ...]  # (topic, partition) the member held before (v1+)


def decode_subscription(data: bytes) -> Subscription:
    """A member's ConsumerProtocolSubscription; InvalidRequestError naming what is wrong."""
    if len(data) < 2:
        raise InvalidRequestError(
            f"consumer protocol subscription is {len(data)} bytes, shorter than its version")
    (version,) = struct.unpack_from(">h", data)
    if version < 0:
        raise InvalidRequestError(f"consumer protocol subscription version {version} is negative")
    i = min(version, len(_SUBSCRIPTIONS) - 1)
    view = memoryview(data).toreadonly()
    try:
        check_lengths(_SUBSCRIPTIONS[i], view, 2)  # kio allocates from the lengths it reads
        sub, _size = _reader(i)(view, 2)
    except Exception as e:  # ProtocolError from the check; kio's plain errors on short bytes
        raise InvalidRequestError(
            f"consumer protocol subscription (version {version}) does not decode: {e}") from None
    topics = tuple(sub.topics)
    if len(topics) > MAX_SUBSCRIBED_TOPICS:
        raise InvalidRequestError(
            f"a subscription lists {len(topics)} topics, at most {MAX_SUBSCRIBED_TOPICS}")
    owned = tuple((tp.topic, int(p)) for tp in getattr(sub, "owned_partitions", ())
                  for p in tp.partitions)
    return Subscription(topics, owned)


def encode_subscription(topics: Iterable[str]) -> bytes:
    """A version-0 subscription (DescribeGroups' member metadata)."""
    buf = io.BytesIO()
    buf.write(struct.pack(">h", 0))
    _writer(sub_v0.ConsumerProtocolSubscription)(buf, sub_v0.ConsumerProtocolSubscription(
        topics=tuple(sorted(topics)), user_data=None))
    return buf.getvalue()


def encode_assignment(partitions: Iterable[tuple[str, int]]) -> bytes:
    """A version-0 ConsumerProtocolAssignment of (topic, partition) pairs."""
    by_topic: dict[str, list[int]] = {}
    for topic, part in sorted(partitions):
        by_topic.setdefault(topic, []).append(part)
    buf = io.BytesIO()
    buf.write(struct.pack(">h", 0))
    _writer(_ASSIGNMENT)(buf, _ASSIGNMENT(
        assigned_partitions=tuple(assign_v0.TopicPartition(topic=TopicName(t), partitions=tuple(i32(p) for p in ps))
                                  for t, ps in by_topic.items()),
        user_data=b""))  # empty rather than null: older clients read it as plain bytes
    return buf.getvalue()


def decode_assignment(data: bytes) -> list[tuple[str, int]] | None:
    """The (topic, partition) pairs of a ConsumerProtocolAssignment (any version: later ones
    only add trailing fields), or None when the bytes are not one."""
    if len(data) < 2 or struct.unpack_from(">h", data)[0] < 0:
        return None
    view = memoryview(data).toreadonly()
    try:
        check_lengths(_ASSIGNMENT, view, 2)
        a, _size = _assignment_reader()(view, 2)
    except Exception:  # not the consumer protocol's bytes: the client's own format
        return None
    return [(str(tp.topic), int(p)) for tp in a.assigned_partitions for p in tp.partitions]
