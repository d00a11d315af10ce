"""Kafka's admin APIs: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
IncrementalAlterConfigs and DeleteRecords, on the supervisor's LogManager.

The rules are the native admin API's (edgebus/server/handlers/admin.py): the same name checks,
the same TopicConfig ranges, internal topics ("__...") out of reach, groups told when a topic
appears, disappears or grows. Kafka's config names map onto edgebus's in topic_configs.py. What
one broker cannot do is refused with Kafka's own error: a replication factor above 1
(INVALID_REPLICATION_FACTOR), manual replica assignments (INVALID_REQUEST), fewer partitions
(INVALID_PARTITIONS), compaction (INVALID_CONFIG).

A topic's Kafka topic id is its incarnation (128 random bits made at creation) read as a UUID, so
a topic deleted and created again under the same name has a new id, as in Kafka.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from edgebus import format as F
from edgebus.acl.rules import Kind, Op
from edgebus.errors import (
    EdgebusError,
    InvalidRequestError,
    InvalidTopicError,
    MirrorReadOnlyError,
    TopicExistsError,
    UnknownTopicError,
)
from edgebus.log.topic_config import TopicConfig, validate_topic_name
from edgebus.protocol import messages as M
from edgebus.server.kafka import errcodes as E
from edgebus.server.kafka import replica_assignment as RA
from edgebus.server.kafka import topic_configs as C
from edgebus.server.kafka.admin_configs import (
    alter_configs,
    describe_configs,
    incremental_alter_configs,
    list_config_resources,
)
from edgebus.server.kafka.apis import KafkaApi
from edgebus.server.kafka.authz import DENIED_CODE, refused
from edgebus.server.kafka.group_common import admin_of, groups_of
from edgebus.server.kafka.shape import response

log = logging.getLogger("edgebus.kafka.admin")
TOPIC_DENIED = DENIED_CODE[Kind.TOPIC]


def topic_id(cfg: TopicConfig) -> uuid.UUID:
    """The Kafka topic id of a topic: its incarnation as a UUID (nil for a topic without one)."""
    return uuid.UUID(hex=cfg.incarnation) if cfg.incarnation else uuid.UUID(int=0)


def _error(e: EdgebusError, invalid: int = E.INVALID_REQUEST) -> tuple[int, str]:
    return E.code_of(e, invalid), str(e)


# --- CreateTopics --------------------------------------------------------------------------------
def _create_one(ctx: Any, t: Any, validate_only: bool) -> dict[str, Any]:
    logs = ctx.logs
    defaults: TopicConfig = admin_of(ctx).topic_defaults
    row: dict[str, Any] = dict(name=t.name, topic_id=None, error_code=E.NONE, error_message=None,
                               num_partitions=-1, replication_factor=-1, configs=None)
    try:
        validate_topic_name(t.name)
        if t.name in logs.topics():
            raise TopicExistsError(f"topic {t.name!r} already exists")
        if t.replication_factor not in (-1, 1):
            row.update(error_code=E.INVALID_REPLICATION_FACTOR, error_message=(
                f"replication factor {t.replication_factor}: edgebus is one broker, so 1 is the "
                "only factor (replicate to another node with `edgebus replicate`)"))
            return row
        num_partitions = t.num_partitions
        if t.assignments:
            if t.num_partitions != -1 or t.replication_factor != -1:  # Kafka's rule
                raise InvalidRequestError(
                    "num_partitions and replication_factor must be -1 with a replica assignment")
            try:
                num_partitions = RA.created_partitions(t.assignments)
            except RA.AssignmentError as e:
                row.update(error_code=RA.INVALID_REPLICA_ASSIGNMENT, error_message=str(e))
                return row
        if num_partitions == 0 or num_partitions < -1 or num_partitions > F.MAX_PARTITIONS:
            row.update(error_code=E.INVALID_PARTITIONS, error_message=(
                f"num_partitions must be 1..{F.MAX_PARTITIONS} or -1 (the default), got "
                f"{num_partitions}"))
            return row
        try:
            entries = C.entries_for([(c.name, C.OP_SET, c.value) for c in t.configs], defaults,
                                    defaults)
            if num_partitions > 0:
                entries["partitions"] = str(num_partitions)
            cfg = TopicConfig.from_entries(entries, base=defaults)
        except InvalidRequestError as e:
            row.update(error_code=E.INVALID_CONFIG, error_message=str(e))
            return row
        if validate_only:
            logs.check_room(t.name, 1, cfg.partitions)
        else:
            logs.create_topic(t.name, cfg)
            groups_of(ctx).topic_created(t.name)
            cfg = logs.topics()[t.name]
            log.info("created topic %s with %d partitions (Kafka CreateTopics)", t.name,
                     cfg.partitions)
    except EdgebusError as e:
        code, msg = _error(e)
        row.update(error_code=code, error_message=msg)
        return row
    row.update(topic_id=topic_id(cfg), num_partitions=cfg.partitions, replication_factor=1,
               configs=C.describe(cfg, defaults, None))
    return row


def create_topics(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    out = []
    for t in req.topics:
        why = refused(ctx, conn, Kind.TOPIC, Op.CREATE, t.name)
        out.append(_create_one(ctx, t, req.validate_only) if why is None else dict(
            name=t.name, topic_id=None, error_code=TOPIC_DENIED, error_message=why,
            num_partitions=-1, replication_factor=-1, configs=None))
    return response(header, topics=out)


# --- DeleteTopics --------------------------------------------------------------------------------
def _topic_by_id(ctx: Any, tid: uuid.UUID) -> str | None:
    for name, cfg in ctx.logs.topics().items():
        if cfg.incarnation and uuid.UUID(hex=cfg.incarnation) == tid:
            return str(name)
    return None


def delete_topics(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    if header.request_api_version >= 6:
        wanted = [(t.name, t.topic_id) for t in req.topics]
    else:
        wanted = [(n, None) for n in req.topic_names]
    out = []
    for name, tid in wanted:
        if not name and tid is not None and tid.int:
            name = _topic_by_id(ctx, tid)
            if name is None:
                out.append(dict(name=None, topic_id=tid, error_code=E.UNKNOWN_TOPIC_ID,
                                error_message=f"no topic has id {tid}"))
                continue
        why = refused(ctx, conn, Kind.TOPIC, Op.DELETE, name or "")
        if why:
            out.append(dict(name=name, topic_id=tid, error_code=TOPIC_DENIED, error_message=why))
            continue
        try:
            cfg = ctx.logs.topics().get(name)
            # The native handler: answers parked fetches first, tells the groups.
            admin_of(ctx).delete_topic(conn, header.correlation_id, M.DeleteTopicRequest(name))
            out.append(dict(name=name, topic_id=topic_id(cfg) if cfg else tid,
                            error_code=E.NONE, error_message=None))
        except EdgebusError as e:
            code, msg = _error(e)
            out.append(dict(name=name, topic_id=tid, error_code=code, error_message=msg))
    return response(header, responses=out)


# --- CreatePartitions ----------------------------------------------------------------------------
def create_partitions(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    out = []
    for t in req.topics:
        why = refused(ctx, conn, Kind.TOPIC, Op.ALTER, t.name)
        if why:
            out.append(dict(name=t.name, error_code=TOPIC_DENIED, error_message=why))
            continue
        try:
            validate_topic_name(t.name)
            cfg = ctx.logs.topics().get(t.name)
            if cfg is None:
                raise UnknownTopicError(f"unknown topic {t.name!r}")
            if t.count <= cfg.partitions:
                out.append(dict(name=t.name, error_code=E.INVALID_PARTITIONS, error_message=(
                    f"topic {t.name!r} has {cfg.partitions} partition(s); the count can only "
                    f"grow (asked for {t.count})")))
                continue
            if cfg.is_mirror:
                raise MirrorReadOnlyError(f"topic {t.name!r} is a mirror: its partition count "
                                          "is its source's")
            if t.assignments:
                try:
                    RA.check_added(t.assignments, cfg.partitions, t.count)
                except RA.AssignmentError as e:
                    out.append(dict(name=t.name, error_code=RA.INVALID_REPLICA_ASSIGNMENT,
                                    error_message=str(e)))
                    continue
            if req.validate_only:
                TopicConfig.from_entries({"partitions": t.count}, base=cfg)
                ctx.logs.check_room(t.name, 0, t.count - cfg.partitions)
            else:
                ctx.logs.add_partitions(t.name, t.count)
                groups_of(ctx).topic_created(t.name)  # subscribers rebalance onto the new ones
                log.info("topic %s grown to %d partitions (Kafka CreatePartitions)", t.name,
                         t.count)
            out.append(dict(name=t.name, error_code=E.NONE, error_message=None))
        except InvalidTopicError as e:
            out.append(dict(name=t.name, error_code=E.INVALID_TOPIC, error_message=str(e)))
        except EdgebusError as e:
            code, msg = _error(e, E.INVALID_PARTITIONS)
            out.append(dict(name=t.name, error_code=code, error_message=msg))
    return response(header, results=out)


# --- DeleteRecords -------------------------------------------------------------------------------
HIGH_WATERMARK = -1  # DeleteRecords offset meaning "everything up to the log end"


def delete_records(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    topics = []
    for t in req.topics:
        rows = []
        if refused(ctx, conn, Kind.TOPIC, Op.DELETE, t.name):  # deleting records: topic delete
            topics.append(dict(name=t.name, partitions=[
                dict(partition_index=p.partition_index, low_watermark=-1,
                     error_code=TOPIC_DENIED) for p in t.partitions]))
            continue
        for p in t.partitions:
            try:
                validate_topic_name(t.name)
                part = ctx.logs.partition(t.name, p.partition_index)
                if part.config.is_mirror:
                    raise MirrorReadOnlyError(f"topic {t.name!r} is a mirror: only its "
                                              "replication link changes it")
                offset = part.log_end_offset if p.offset == HIGH_WATERMARK else p.offset
                if offset < 0:
                    rows.append(dict(partition_index=p.partition_index, low_watermark=-1,
                                     error_code=E.OFFSET_OUT_OF_RANGE))
                    continue
                low = part.delete_records(offset)
                log.info("%s: records below %d deleted (Kafka DeleteRecords)", part.name, low)
                rows.append(dict(partition_index=p.partition_index, low_watermark=low,
                                 error_code=E.NONE))
            except EdgebusError as e:
                rows.append(dict(partition_index=p.partition_index, low_watermark=-1,
                                 error_code=E.code_of(e)))
        topics.append(dict(name=t.name, partitions=rows))
    return response(header, topics=topics)


APIS = [
    KafkaApi(19, 2, 7, create_topics),
    KafkaApi(20, 1, 6, delete_topics),
    KafkaApi(21, 0, 2, delete_records),
    KafkaApi(37, 0, 3, create_partitions),
    KafkaApi(32, 1, 4, describe_configs),
    KafkaApi(33, 0, 2, alter_configs),
    KafkaApi(44, 0, 1, incremental_alter_configs),
    KafkaApi(74, 0, 1, list_config_resources),
]
