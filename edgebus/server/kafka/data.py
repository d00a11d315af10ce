"""Kafka's data-plane APIs: ApiVersions, Metadata, Produce, Fetch, ListOffsets, InitProducerId.

Each is a thin adapter: it takes the kio request, calls the supervisor's own handlers and log
(so limits, checks, group commit and parked fetches are the native ones) and builds the kio
response of the request's version (codec.build). Produce and Fetch live in produce.py and
fetch.py; the registry of all of them is APIS at the end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from edgebus.acl.rules import Kind
from edgebus.server.kafka.admin import topic_id
from edgebus.server.kafka.apis import KafkaApi
from edgebus.server.kafka.authz_ops import NOT_ASKED, authorized_operations
from edgebus.server.kafka.autocreate import allowed, auto_create
from edgebus.server.kafka.codec import build, response_module
from edgebus.server.kafka.context import CLUSTER_ID, NODE_ID
from edgebus.server.kafka.fetch import KafkaFetches, fetch, list_offsets
from edgebus.server.kafka.leader_epochs import epochs_of
from edgebus.server.kafka.produce import produce, producers

if TYPE_CHECKING:
    from edgebus.server.kafka.context import KafkaContext
    from edgebus.server.listeners.stream import Connection

PRODUCE, FETCH, LIST_OFFSETS, METADATA, API_VERSIONS, INIT_PRODUCER_ID = 0, 1, 2, 3, 18, 22


def init(ctx: KafkaContext) -> list[Any]:
    """The state these APIs keep: parked fetches (a service on the loop) and producer ids."""
    ctx.parts["fetches"] = f = KafkaFetches(ctx)
    producers(ctx)
    return [f]


def api_versions(ctx: KafkaContext, conn: Connection, header: Any, req: Any) -> Any:
    """Exactly the APIs registered (apis.collect), each with its version range."""
    mod = response_module(API_VERSIONS, header.request_api_version)
    if header.client_id is not None:
        conn.client_id = header.client_id  # type: ignore[attr-defined]
    keys = tuple(build(mod.ApiVersion, api_key=a.api_key, min_version=a.min_version,
                       max_version=a.max_version)
                 for a in sorted(ctx.apis.values(), key=lambda a: a.api_key))
    return build(mod.ApiVersionsResponse, error_code=ErrorCode.none, api_keys=keys)


def visible_topics(ctx: KafkaContext) -> list[str]:
    """Topics a Kafka client lists: everything but edgebus's internal ones ("__...")."""
    return sorted(n for n in ctx.logs.topics() if not n.startswith("__"))


def metadata(ctx: KafkaContext, conn: Connection, header: Any, req: Any) -> Any:
    """One broker (this supervisor, at the advertised address), leader of every partition."""
    version = header.request_api_version
    mod = response_module(METADATA, version)
    if header.client_id is not None:
        conn.client_id = header.client_id  # type: ignore[attr-defined]
    wanted = req.topics
    if wanted is None or (version == 0 and not wanted):  # null (v0: empty) = every topic
        names = visible_topics(ctx)
    else:
        names = [t.name for t in wanted if t.name is not None]
    topics = ctx.logs.topics()
    create = wanted is not None and allowed(ctx, version, req)
    topic_ops = getattr(req, "include_topic_authorized_operations", False)  # v8+
    epochs = epochs_of(ctx)
    out = []
    for name in names:
        cfg = topics.get(name)
        if cfg is None and create:  # Kafka's auto.create.topics.enable (autocreate.py)
            code = auto_create(ctx, conn, name)
            topics = ctx.logs.topics()
            cfg = topics.get(name) if code == 0 else None
        else:
            code = int(ErrorCode.unknown_topic_or_partition)
        if cfg is None or name.startswith("__"):
            out.append(build(mod.MetadataResponseTopic, error_code=code or
                             ErrorCode.unknown_topic_or_partition, name=name, partitions=()))
            continue
        parts = tuple(
            build(mod.MetadataResponsePartition, error_code=ErrorCode.none, partition_index=i,
                  leader_id=NODE_ID, leader_epoch=epochs.current(ctx.logs.partition(name, i))
                  if epochs.table else 0,  # leader_epochs.py: bumped where a tail may be gone
                  replica_nodes=(NODE_ID,), isr_nodes=(NODE_ID,), offline_replicas=())
            for i in range(cfg.partitions))
        out.append(build(mod.MetadataResponseTopic, error_code=ErrorCode.none, name=name,
                         topic_id=topic_id(cfg),  # v10+: the id CreateTopics gave
                         is_internal=False, partitions=parts,
                         topic_authorized_operations=authorized_operations(
                             ctx, conn, Kind.TOPIC, name) if topic_ops else NOT_ASKED))
    host, port = ctx.advertised
    broker = build(mod.MetadataResponseBroker, node_id=NODE_ID, host=host, port=port, rack=None)
    cluster_ops = (authorized_operations(ctx, conn, Kind.CLUSTER, "*")  # v8-10
                   if getattr(req, "include_cluster_authorized_operations", False) else NOT_ASKED)
    return build(mod.MetadataResponse, brokers=(broker,), cluster_id=CLUSTER_ID,
                 controller_id=NODE_ID, topics=tuple(out),
                 cluster_authorized_operations=cluster_ops)


def init_producer_id(ctx: KafkaContext, conn: Connection, header: Any, req: Any) -> Any:
    """A new producer id (epoch 0) for an idempotent producer; a producer that gives its id and
    epoch back (KIP-360, v3+) gets the next epoch of the same id. With a
    transactional id, the transaction coordinator answers (txn.py)."""
    mod = response_module(INIT_PRODUCER_ID, header.request_api_version)
    pid, epoch = getattr(req, "producer_id", -1), getattr(req, "producer_epoch", -1)
    if req.transactional_id is not None:
        timeout = int(req.transaction_timeout.total_seconds() * 1000)
        err, pid, epoch = ctx.parts["txn"].init_producer(req.transactional_id, timeout, pid, epoch)
        if err == 90 and header.request_api_version < 4:  # PRODUCER_FENCED is new in v4
            err = int(ErrorCode.invalid_producer_epoch)
        return build(mod.InitProducerIdResponse, error_code=err, producer_id=pid,
                     producer_epoch=epoch)
    if pid >= 0 and 0 <= epoch < 32767:
        return build(mod.InitProducerIdResponse, error_code=ErrorCode.none, producer_id=pid,
                     producer_epoch=epoch + 1)
    return build(mod.InitProducerIdResponse, error_code=ErrorCode.none,
                 producer_id=producers(ctx).new_producer_id(), producer_epoch=0)


APIS: list[KafkaApi] = [
    KafkaApi(PRODUCE, 3, 9, produce),
    KafkaApi(FETCH, 4, 12, fetch),
    KafkaApi(LIST_OFFSETS, 1, 10, list_offsets),
    KafkaApi(METADATA, 0, 12, metadata),
    KafkaApi(API_VERSIONS, 0, 3, api_versions, before_auth=True),
    KafkaApi(INIT_PRODUCER_ID, 0, 4, init_producer_id),
]
