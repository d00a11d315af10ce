"""What the transaction coordinator and the producer states hold, as Kafka's admin clients ask
for it: ListTransactions, DescribeTransactions (kafka-transactions.sh, kafka-python's
list_transactions / describe_transactions) and DescribeProducers.

The same state `edgebus txn list` shows (server/txn/), so they need what it needs: status on the
cluster for the transactions (the rules have no transactional-id resource; refused:
CLUSTER_AUTHORIZATION_FAILED, per id TRANSACTIONAL_ID_AUTHORIZATION_FAILED), read on the topic for
a partition's producers (TOPIC_AUTHORIZATION_FAILED), as Kafka asks read there.

ListTransactions v2's `transactional_id_pattern` (a regular expression run by the broker) is not
served: on the supervisor's one loop a client's pattern could backtrack for seconds, and v0-1
list everything the pattern would select from.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from edgebus.acl.rules import Kind, Op
from edgebus.errors import EdgebusError
from edgebus.server.kafka import errcodes as E
from edgebus.server.kafka.apis import KafkaApi
from edgebus.server.kafka.authz import DENIED_CODE, refused
from edgebus.server.kafka.produce import producers
from edgebus.server.kafka.shape import response
from edgebus.server.kafka.txn import coordinator
from edgebus.server.txn.state import EMPTY, ONGOING, PREPARE_ABORT, PREPARE_COMMIT, Txn

DESCRIBE_TRANSACTIONS, LIST_TRANSACTIONS, DESCRIBE_PRODUCERS = 65, 66, 61
TXN_ID_DENIED, TXN_ID_NOT_FOUND = 53, 105  # TRANSACTIONAL_ID_{AUTHORIZATION_FAILED,NOT_FOUND}

# Kafka's names of the coordinator's states (TransactionState.java). Kafka's CompleteCommit and
# CompleteAbort are Empty here: a finished transaction leaves nothing to complete.
STATE_NAMES = {EMPTY: "Empty", ONGOING: "Ongoing", PREPARE_COMMIT: "PrepareCommit",
               PREPARE_ABORT: "PrepareAbort"}
KAFKA_STATES = frozenset({*STATE_NAMES.values(), "CompleteCommit", "CompleteAbort", "Dead",
                          "PrepareEpochFence"})


def _start_ms(t: Txn) -> int:
    """Wall-clock start of `t`'s open transaction in ms (-1: none open); kept as monotonic."""
    if t.state == EMPTY:
        return -1
    return int((time.time() - (time.monotonic() - t.began)) * 1000)


def list_transactions(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    why = refused(ctx, conn, Kind.CLUSTER, Op.STATUS, "*")
    if why:
        return response(header, error_code=DENIED_CODE[Kind.CLUSTER], unknown_state_filters=[],
                        transaction_states=[])
    states, pids = set(req.state_filters), set(req.producer_id_filters)
    longer_than = getattr(req, "duration_filter", -1)  # v1+
    now_ms = int(time.time() * 1000)
    out = []
    for tid, t in sorted(coordinator(ctx).state.txns.items()):
        name = STATE_NAMES.get(t.state, t.state)
        if (states and name not in states) or (pids and t.producer_id not in pids):
            continue
        if longer_than >= 0 and (t.state == EMPTY or now_ms - _start_ms(t) <= longer_than):
            continue
        out.append(dict(transactional_id=tid, producer_id=t.producer_id, transaction_state=name))
    return response(header, error_code=E.NONE, unknown_state_filters=sorted(states - KAFKA_STATES),
                    transaction_states=out)


def describe_transactions(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    denied = refused(ctx, conn, Kind.CLUSTER, Op.STATUS, "*") is not None
    txns = coordinator(ctx).state.txns
    out = []
    for tid in req.transactional_ids:
        t = None if denied else txns.get(tid)
        if t is None:
            out.append(dict(error_code=TXN_ID_DENIED if denied else TXN_ID_NOT_FOUND,
                            transactional_id=tid, transaction_state="", transaction_timeout=0,
                            transaction_start_time=_time(-1), producer_id=-1, producer_epoch=-1,
                            topics=[]))
            continue
        by_topic: dict[str, list[int]] = {}
        for topic, part in sorted(t.parts):
            by_topic.setdefault(topic, []).append(part)
        out.append(dict(error_code=E.NONE, transactional_id=tid,
                        transaction_state=STATE_NAMES.get(t.state, t.state),
                        transaction_timeout=t.timeout_ms, transaction_start_time=_time(_start_ms(t)),
                        producer_id=t.producer_id, producer_epoch=t.epoch,
                        topics=[dict(topic=n, partitions=ps) for n, ps in by_topic.items()]))
    return response(header, transaction_states=out)


def _time(ms: int) -> datetime.datetime:
    """kio's datetime_i64 from ms since the epoch (-1 is written back as -1)."""
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)


def describe_producers(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    states = producers(ctx)
    txns = coordinator(ctx).state.txns.values()
    topics = []
    for t in req.topics:
        why = refused(ctx, conn, Kind.TOPIC, Op.READ, t.name)
        rows = []
        for i in t.partition_indexes:
            row: dict[str, Any] = dict(partition_index=i, error_code=E.NONE, error_message=None,
                                       active_producers=[])
            rows.append(row)
            if why:
                row.update(error_code=DENIED_CODE[Kind.TOPIC], error_message=why)
                continue
            try:
                p = ctx.logs.partition(t.name, i)
            except EdgebusError as e:
                row.update(error_code=E.code_of(e), error_message=str(e))
                continue
            # The offset of each producer's open transaction's first batch here (what holds the
            # last stable offset back), -1 without one.
            open_at = {x.producer_id: x.parts.get((t.name, i), -1) for x in txns
                       if x.state != EMPTY}
            row["active_producers"] = [
                dict(producer_id=pid, producer_epoch=e.epoch, last_sequence=e.last_seq,
                     last_timestamp=-1, coordinator_epoch=-1,
                     current_txn_start_offset=open_at.get(pid, -1))
                for pid, e in sorted(states.of_partition(p).items())]
        topics.append(dict(name=t.name, partitions=rows))
    return response(header, topics=topics)


APIS: list[KafkaApi] = [
    KafkaApi(DESCRIBE_PRODUCERS, 0, 0, describe_producers),
    KafkaApi(DESCRIBE_TRANSACTIONS, 0, 0, describe_transactions),
    KafkaApi(LIST_TRANSACTIONS, 0, 1, list_transactions),
]
