"""Kafka transactions: the Kafka APIs of the transaction coordinator (server/txn/coordinator.py,
shared with the native APIs; docs/KAFKA.md, docs/FORMAT.md 9.4). AddPartitionsToTxn,
AddOffsetsToTxn, TxnOffsetCommit and EndTxn are checked against the access rules here and answered
with the coordinator's Kafka error numbers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from edgebus.acl.rules import Kind, Op
from edgebus.errors import EdgebusError
from edgebus.server.kafka import errcodes as E
from edgebus.server.kafka.apis import KafkaApi
from edgebus.server.kafka.authz import DENIED_CODE, refused
from edgebus.server.kafka.group_common import groups_of
from edgebus.server.kafka.produce import producers
from edgebus.server.kafka.shape import response
from edgebus.server.txn.coordinator import INVALID_PRODUCER_EPOCH, PRODUCER_FENCED, TxnCoordinator

if TYPE_CHECKING:
    from edgebus.server.kafka.context import KafkaContext

log = logging.getLogger("edgebus.kafka")

ADD_PARTITIONS, ADD_OFFSETS, END_TXN, TXN_OFFSET_COMMIT = 24, 25, 26, 28
NOT_ATTEMPTED = 55  # OPERATION_NOT_ATTEMPTED: the rest of a refused AddPartitionsToTxn


def coordinator(ctx: KafkaContext) -> TxnCoordinator:
    """The supervisor's one coordinator (the Broker makes it and puts it in ctx.parts; one is
    made here only for a context built without a Broker)."""
    c: TxnCoordinator | None = ctx.parts.get("txn")
    if c is None:
        c = ctx.parts["txn"] = TxnCoordinator(ctx, producers(ctx))
    return c


def init(ctx: KafkaContext) -> list[Any]:
    owned = "txn" not in ctx.parts  # the Broker's is on the loop already
    c = coordinator(ctx)
    return [c] if owned else []


def add_partitions_to_txn(ctx: KafkaContext, conn: Any, header: Any, req: Any) -> Any:
    keys = [(t.name, int(i)) for t in req.v3_and_below_topics for i in t.partitions]
    # Write on each topic; as in Kafka the request is all or nothing: a refused topic's
    # partitions get TOPIC_AUTHORIZATION_FAILED and the others OPERATION_NOT_ATTEMPTED.
    denied = {t.name for t in req.v3_and_below_topics
              if refused(ctx, conn, Kind.TOPIC, Op.WRITE, t.name)}
    if denied:
        res = {k: DENIED_CODE[Kind.TOPIC] if k[0] in denied else NOT_ATTEMPTED for k in keys}
    else:
        res = coordinator(ctx).add_partitions(req.v3_and_below_transactional_id,
                                          req.v3_and_below_producer_id,
                                              req.v3_and_below_producer_epoch, keys, E.code_of)
    by_topic: dict[str, list[dict[str, int]]] = {}
    for (topic, part), code in res.items():
        by_topic.setdefault(topic, []).append(dict(partition_index=part, partition_error_code=code))
    return response(header, results_by_topic_v3_and_below=[
        dict(name=n, results_by_partition=ps) for n, ps in by_topic.items()])


def add_offsets_to_txn(ctx: KafkaContext, conn: Any, header: Any, req: Any) -> Any:
    if refused(ctx, conn, Kind.GROUP, Op.READ, req.group_id):  # what OffsetCommit needs
        return response(header, error_code=DENIED_CODE[Kind.GROUP])
    err = coordinator(ctx).add_offsets(req.transactional_id, req.producer_id, req.producer_epoch,
                                       req.group_id)
    return response(header, error_code=err)


def txn_offset_commit(ctx: KafkaContext, conn: Any, header: Any, req: Any) -> Any:
    # What OffsetCommit needs: read on the group, then on each topic (a refused topic's
    # partitions get TOPIC_AUTHORIZATION_FAILED, the others are kept).
    group_denied = refused(ctx, conn, Kind.GROUP, Op.READ, req.group_id) is not None
    denied = {t.name for t in req.topics
              if group_denied or refused(ctx, conn, Kind.TOPIC, Op.READ, t.name)}
    entries = [_entry(t.name, p) for t in req.topics if t.name not in denied
               for p in t.partitions]
    err = DENIED_CODE[Kind.GROUP] if group_denied else _member_check(ctx, header, req)
    if not err:
        err = coordinator(ctx).txn_offsets(req.transactional_id, req.producer_id,
                                           req.producer_epoch, req.group_id, entries)
    return response(header, topics=[
        dict(name=t.name, partitions=[dict(
            partition_index=p.partition_index,
            error_code=DENIED_CODE[Kind.TOPIC] if t.name in denied and not group_denied else err)
            for p in t.partitions]) for t in req.topics])


def _entry(topic: str, p: Any) -> tuple[Any, ...]:
    """(topic, partition, offset, metadata[, leader epoch]) as OffsetCommit stores them: v2+
    carries the leader epoch of the last record read (KIP-320), given back by OffsetFetch once
    the transaction commits. Epoch 0 or none (-1) is left out: the offsets value stays version
    0 (groups/offsets.py), and so does the entry in the transactions' state file."""
    epoch = int(getattr(p, "committed_leader_epoch", -1))
    base = (topic, int(p.partition_index), int(p.committed_offset), p.committed_metadata or "")
    return (*base, epoch) if epoch > 0 else base


def _member_check(ctx: KafkaContext, header: Any, req: Any) -> int:
    """v3+ carries the consumer's member id and generation: checked as OffsetCommit's are."""
    if header.request_api_version < 3:
        return 0
    try:
        groups_of(ctx).coordinator.check_txn_commit(req.group_id, req.generation_id,
                                                    req.member_id)
    except EdgebusError as e:
        return E.code_of(e)
    return 0


def end_txn(ctx: KafkaContext, conn: Any, header: Any, req: Any) -> Any:
    err = coordinator(ctx).end(req.transactional_id, req.producer_id, req.producer_epoch,
                               bool(req.committed))
    if err == PRODUCER_FENCED and header.request_api_version < 2:
        err = INVALID_PRODUCER_EPOCH  # PRODUCER_FENCED is new in EndTxn v2 (KIP-588)
    return response(header, error_code=err)


APIS: list[KafkaApi] = [
    KafkaApi(ADD_PARTITIONS, 0, 3, add_partitions_to_txn),
    KafkaApi(ADD_OFFSETS, 0, 3, add_offsets_to_txn),
    KafkaApi(END_TXN, 0, 3, end_txn),
    KafkaApi(TXN_OFFSET_COMMIT, 0, 3, txn_offset_commit),
]
