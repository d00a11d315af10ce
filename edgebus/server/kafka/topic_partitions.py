"""Kafka's DescribeTopicPartitions (KIP-966; kafka-python's describe_topic_partitions): topics and
their partitions as Metadata gives them, a page at a time.

Topics in name order, from the request's cursor (topic, first partition) on, at most
`response_partition_limit` partitions in an answer (bounded here too), with `next_cursor` naming
where the next page starts, as in Kafka. A topic named that does not exist:
UNKNOWN_TOPIC_OR_PARTITION; one the principal may not describe: TOPIC_AUTHORIZATION_FAILED; no
topic named: every topic it may describe. One broker, node 0, leads every partition (no eligible
leader replicas to report). The topic id is the topic's incarnation, as in CreateTopics.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from edgebus.acl.rules import Kind, Op
from edgebus.server.kafka import errcodes as E
from edgebus.server.kafka.admin import topic_id
from edgebus.server.kafka.apis import KafkaApi
from edgebus.server.kafka.authz import DENIED_CODE, refused, visible
from edgebus.server.kafka.context import NODE_ID
from edgebus.server.kafka.leader_epochs import LeaderEpochs, epochs_of
from edgebus.server.kafka.shape import response

DESCRIBE_TOPIC_PARTITIONS = 75
MAX_PARTITIONS_PER_ANSWER = 2000  # Kafka's own default limit: bounds one answer's size


def _row(name: str, code: int, cfg: Any = None, parts: range = range(0),
         epoch: Callable[[int], int] = lambda i: 0) -> dict[str, Any]:
    return dict(error_code=code, name=name, topic_id=topic_id(cfg) if cfg else None,
                is_internal=False, topic_authorized_operations=-2147483648, partitions=[
                    dict(error_code=E.NONE, partition_index=i, leader_id=NODE_ID,
                         leader_epoch=epoch(i), replica_nodes=[NODE_ID], isr_nodes=[NODE_ID],
                         eligible_leader_replicas=None, last_known_elr=None, offline_replicas=[])
                    for i in parts])


def _epoch(ctx: Any, epochs: LeaderEpochs, topic: str, i: int) -> int:
    """A partition's leader epoch, as Metadata gives it (leader_epochs.py)."""
    return epochs.current(ctx.logs.partition(topic, i)) if epochs.table else 0


def describe_topic_partitions(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    topics = {n: c for n, c in ctx.logs.topics().items() if not n.startswith("__")}
    named = bool(req.topics)
    names = (sorted({t.name for t in req.topics}) if named
             else sorted(n for n in topics if visible(ctx, conn, Kind.TOPIC, n)))
    budget = max(1, min(req.response_partition_limit, MAX_PARTITIONS_PER_ANSWER))
    cursor = req.cursor
    epochs = epochs_of(ctx)
    out: list[dict[str, Any]] = []
    next_cursor = None
    for name in names:
        if cursor is not None and name < cursor.topic_name:
            continue  # before the page
        why = refused(ctx, conn, Kind.TOPIC, Op.DESCRIBE, name) if named else None
        if why:
            out.append(_row(name, DENIED_CODE[Kind.TOPIC]))
            continue
        cfg = topics.get(name)
        if cfg is None:
            out.append(_row(name, E.UNKNOWN_TOPIC_OR_PARTITION))
            continue
        first = cursor.partition_index if cursor is not None and name == cursor.topic_name else 0
        first = max(0, first)
        if budget == 0 and first < cfg.partitions:
            next_cursor = dict(topic_name=name, partition_index=first)
            break
        end = min(cfg.partitions, first + budget)
        budget -= end - first
        out.append(_row(name, E.NONE, cfg, range(first, end), functools.partial(
            _epoch, ctx, epochs, name)))
        if end < cfg.partitions:
            next_cursor = dict(topic_name=name, partition_index=end)
            break
    return response(header, topics=out, next_cursor=next_cursor)


APIS: list[KafkaApi] = [KafkaApi(DESCRIBE_TOPIC_PARTITIONS, 0, 0, describe_topic_partitions)]
