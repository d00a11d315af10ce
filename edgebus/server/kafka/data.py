"""Kafka's data-plane APIs: ApiVersions, Metadata, Produce, Fetch, ListOffsets, InitProducerId.

Each is a thin adapter: it takes the kio request, calls the supervisor's own handlers and log
(so limits, checks, group commit and parked fetches are the native ones) and builds the kio
response of the request's version (codec.build). Produce and Fetch live in produce.py and
fetch.py; the registry of all of them is APIS at the end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from edgebus.server.kafka.apis import KafkaApi
from edgebus.server.kafka.codec import build, response_module
from edgebus.server.kafka.context import CLUSTER_ID, NODE_ID

if TYPE_CHECKING:
    from edgebus.server.kafka.context import KafkaContext
    from edgebus.server.listeners.stream import Connection

API_VERSIONS, METADATA = 18, 3


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
    out = []
    for name in names:
        cfg = topics.get(name)
        if cfg is None or name.startswith("__"):
            out.append(build(mod.MetadataResponseTopic, error_code=ErrorCode.unknown_topic_or_partition,
                             name=name, partitions=()))
            continue
        parts = tuple(
            build(mod.MetadataResponsePartition, error_code=ErrorCode.none, partition_index=i,
                  leader_id=NODE_ID, leader_epoch=0, replica_nodes=(NODE_ID,), isr_nodes=(NODE_ID,),
                  offline_replicas=())
            for i in range(cfg.partitions))
        out.append(build(mod.MetadataResponseTopic, error_code=ErrorCode.none, name=name,
                         is_internal=False, partitions=parts))
    host, port = ctx.advertised
    broker = build(mod.MetadataResponseBroker, node_id=NODE_ID, host=host, port=port, rack=None)
    return build(mod.MetadataResponse, brokers=(broker,), cluster_id=CLUSTER_ID,
                 controller_id=NODE_ID, topics=tuple(out))


APIS: list[KafkaApi] = [
    KafkaApi(API_VERSIONS, 0, 3, api_versions, before_auth=True),
    KafkaApi(METADATA, 0, 12, metadata),
]
