"""Kafka's cluster-level admin APIs, answered as a one-broker cluster answers them:
DescribeLogDirs, ElectLeaders, ListPartitionReassignments and AlterPartitionReassignments
(docs/KAFKA.md; the SCRAM users' APIs are in scram_users.py).

edgebus is one broker (node 0) with one log directory (the data directory): node 0 leads every
partition, so an election is never needed (ELECTION_NOT_NEEDED, as Kafka answers for a partition
whose preferred leader leads), no reassignment is ever in progress, and the only assignment a
partition can have is [0] (anything else: INVALID_REPLICA_ASSIGNMENT).

Rules, as Kafka's (describe and alter on the cluster there): describing needs status on the
cluster, electing and reassigning admin; refused: CLUSTER_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

import os
from typing import Any

from edgebus.acl.rules import Kind, Op
from edgebus.errors import EdgebusError, UnknownTopicError
from edgebus.server.kafka import errcodes as E
from edgebus.server.kafka.apis import KafkaApi
from edgebus.server.kafka.authz import DENIED_CODE, refused
from edgebus.server.kafka.context import NODE_ID
from edgebus.server.kafka.shape import response

DESCRIBE_LOG_DIRS, ELECT_LEADERS, ALTER_REASSIGNMENTS, LIST_REASSIGNMENTS = 35, 43, 45, 46
CLUSTER_DENIED = DENIED_CODE[Kind.CLUSTER]
INVALID_REPLICA_ASSIGNMENT, ELECTION_NOT_NEEDED, NO_REASSIGNMENT_IN_PROGRESS = 39, 84, 85


def _denied(ctx: Any, conn: Any, op: Op) -> str | None:
    return refused(ctx, conn, Kind.CLUSTER, op, "*")


def _partition(ctx: Any, topic: str, index: int) -> tuple[int, str | None]:
    """(NONE, None) if the partition exists, else its Kafka error and why."""
    try:
        if topic.startswith("__"):
            raise UnknownTopicError(f"unknown topic {topic!r}")  # internal: not the clients'
        ctx.logs.partition(topic, index)
    except EdgebusError as e:
        return E.UNKNOWN_TOPIC_OR_PARTITION, str(e)
    return E.NONE, None


# --- DescribeLogDirs -----------------------------------------------------------------------------
def describe_log_dirs(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    why = _denied(ctx, conn, Op.STATUS)
    if why:
        return response(header, error_code=CLUSTER_DENIED, results=[])
    topics = {n: c for n, c in ctx.logs.topics().items() if not n.startswith("__")}
    wanted: dict[str, list[int]]
    if req.topics is None:
        wanted = {n: list(range(c.partitions)) for n, c in sorted(topics.items())}
    else:
        wanted = {t.topic: [i for i in t.partitions if 0 <= i < topics[t.topic].partitions]
                  for t in req.topics if t.topic in topics}
    out = []
    for name, indexes in wanted.items():
        parts = {p.partition: p for p in ctx.logs.partitions(name)}
        out.append(dict(name=name, partitions=[
            dict(partition_index=i, partition_size=parts[i].size_bytes, offset_lag=0,
                 is_future_key=False) for i in indexes if i in parts]))
    st = os.statvfs(ctx.logs.data_dir)
    return response(header, error_code=E.NONE, results=[dict(
        error_code=E.NONE, log_dir=str(ctx.logs.data_dir), topics=out,
        total_bytes=st.f_blocks * st.f_frsize, usable_bytes=st.f_bavail * st.f_frsize)])


# --- ElectLeaders --------------------------------------------------------------------------------
def elect_leaders(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    why = _denied(ctx, conn, Op.ADMIN)
    results = []
    for t in req.topic_partitions or ():  # null: every partition that needs one, so none
        rows = []
        for i in t.partitions:
            code, msg = _partition(ctx, t.topic, i)
            if why:
                code, msg = CLUSTER_DENIED, why
            elif code == E.NONE:
                code, msg = ELECTION_NOT_NEEDED, (
                    f"node {NODE_ID} already leads {t.topic}-{i}: edgebus is one broker")
            rows.append(dict(partition_id=i, error_code=code, error_message=msg))
        results.append(dict(topic=t.topic, partition_result=rows))
    return response(header, error_code=CLUSTER_DENIED if why else E.NONE,
                    replica_election_results=results)


# --- ListPartitionReassignments / AlterPartitionReassignments ------------------------------------
def list_reassignments(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    why = _denied(ctx, conn, Op.STATUS)
    return response(header, error_code=CLUSTER_DENIED if why else E.NONE, error_message=why,
                    topics=[])  # one broker: nothing is ever being moved


def alter_reassignments(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    why = _denied(ctx, conn, Op.ADMIN)
    if why:
        return response(header, error_code=CLUSTER_DENIED, error_message=why, responses=[])
    out = []
    for t in req.topics:
        rows = []
        for p in t.partitions:
            code, msg = _partition(ctx, t.name, p.partition_index)
            if code == E.NONE and p.replicas is None:
                code, msg = NO_REASSIGNMENT_IN_PROGRESS, "no reassignment is in progress"
            elif code == E.NONE and tuple(p.replicas) != (NODE_ID,):
                code, msg = INVALID_REPLICA_ASSIGNMENT, (
                    f"replicas {list(p.replicas)}: edgebus is one broker, node {NODE_ID}, the "
                    "only replica of every partition")
            rows.append(dict(partition_index=p.partition_index, error_code=code,
                             error_message=msg))
        out.append(dict(name=t.name, partitions=rows))
    return response(header, error_code=E.NONE, error_message=None, responses=out)


APIS: list[KafkaApi] = [
    KafkaApi(DESCRIBE_LOG_DIRS, 1, 4, describe_log_dirs),
    KafkaApi(ELECT_LEADERS, 0, 2, elect_leaders),
    KafkaApi(ALTER_REASSIGNMENTS, 0, 1, alter_reassignments),
    KafkaApi(LIST_REASSIGNMENTS, 0, 0, list_reassignments),
]
