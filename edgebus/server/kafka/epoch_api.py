"""Kafka's OffsetForLeaderEpoch (v2-v4; KIP-320): where a leader epoch ended.

A consumer whose partition's epoch advanced (Metadata) asks where the epoch of its position ended;
a position past that end was truncated away, and the client moves back to the end (librdkafka,
kafka-python and the Java client) or raises a truncation error (`auto.offset.reset=error`). The
epochs and their meaning on one node are leader_epochs.py's. Versions: librdkafka sends v2 only,
kafka-python 3 up to v4; v0-v1 were removed in Kafka 4, and are not served.

Per partition, as Kafka: a `current_leader_epoch` below the partition's is FENCED_LEADER_EPOCH
(the client refreshes its metadata first); one above it is answered as if absent (-1), not with
UNKNOWN_LEADER_EPOCH: here it can only be a deleted topic's epoch, and librdkafka, which ignores
a lower epoch in Metadata, would retry forever; the requested epoch then answers (-1, -1), and
the client resets its position by its reset policy. Describe on the topic is needed
(TOPIC_AUTHORIZATION_FAILED), as for ListOffsets.
"""

from __future__ import annotations

from typing import Any

from edgebus.acl.rules import Kind, Op
from edgebus.errors import EdgebusError
from edgebus.server.kafka import errcodes as E
from edgebus.server.kafka.apis import KafkaApi
from edgebus.server.kafka.authz import DENIED_CODE, refused
from edgebus.server.kafka.leader_epochs import UNDEFINED, epochs_of
from edgebus.server.kafka.shape import response

OFFSET_FOR_LEADER_EPOCH = 23


def _partition(ctx: Any, topic: str, req: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict(partition=req.partition, error_code=E.NONE,
                               leader_epoch=UNDEFINED, end_offset=UNDEFINED)
    try:
        p = ctx.logs.partition(topic, req.partition)
    except EdgebusError as e:
        row["error_code"] = E.code_of(e, E.UNKNOWN_TOPIC_OR_PARTITION)
        return row
    epochs = epochs_of(ctx)
    if 0 <= req.current_leader_epoch < epochs.current(p):
        row["error_code"] = E.FENCED_LEADER_EPOCH
        return row
    row["leader_epoch"], row["end_offset"] = epochs.end_offset_for(p, req.leader_epoch)
    return row


def offset_for_leader_epoch(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    topics = []
    for t in req.topics:
        code = (E.UNKNOWN_TOPIC_OR_PARTITION if t.topic.startswith("__")  # internal: not served
                else DENIED_CODE[Kind.TOPIC] if refused(ctx, conn, Kind.TOPIC, Op.DESCRIBE, t.topic)
                else E.NONE)
        if code != E.NONE:
            rows = [dict(partition=p.partition, error_code=code) for p in t.partitions]
        else:
            rows = [_partition(ctx, t.topic, p) for p in t.partitions]
        topics.append(dict(topic=t.topic, partitions=rows))
    return response(header, topics=topics)


APIS: list[KafkaApi] = [KafkaApi(OFFSET_FOR_LEADER_EPOCH, 2, 4, offset_for_leader_epoch)]
