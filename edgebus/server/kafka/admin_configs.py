"""Kafka's DescribeConfigs, IncrementalAlterConfigs and AlterConfigs for topics (names in
topic_configs.py).

Broker settings live in the supervisor's config file: DescribeConfigs of a broker answers an
empty list, and altering one is refused naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edgebus.acl.rules import Kind, Op
from edgebus.errors import EdgebusError, InvalidRequestError, UnknownTopicError
from edgebus.log.topic_config import TopicConfig, validate_topic_name
from edgebus.server.handlers.admin import describe_changes
from edgebus.server.kafka import errcodes as E
from edgebus.server.kafka import topic_configs as C
from edgebus.server.kafka.authz import DENIED_CODE, acl_of, refused, visible
from edgebus.server.kafka.context import NODE_ID
from edgebus.server.kafka.group_common import admin_of
from edgebus.server.kafka.shape import response

log = logging.getLogger("edgebus.kafka.admin")


def _topic(ctx: Any, name: str) -> TopicConfig:
    validate_topic_name(name)  # internal topics ("__...") are not the clients' to see or change
    cfg: TopicConfig | None = ctx.logs.topics().get(name)
    if cfg is None:
        raise UnknownTopicError(f"unknown topic {name!r}")
    return cfg


def _refused(ctx: Any, conn: Any, r: Any, topic_op: Op,
             cluster_op: Op) -> tuple[int, str] | None:
    """(Kafka code, reason) if `conn` may not: `topic_op` on a topic resource, `cluster_op` on
    the cluster for a broker resource (the broker's settings are the cluster's)."""
    kind, op = ((Kind.TOPIC, topic_op) if r.resource_type == C.RESOURCE_TOPIC
                else (Kind.CLUSTER, cluster_op) if r.resource_type == C.RESOURCE_BROKER
                else (None, None))
    if kind is None or op is None:
        return None
    why = refused(ctx, conn, kind, op, r.resource_name if kind is Kind.TOPIC else "*")
    return (DENIED_CODE[kind], why) if why else None


def describe_configs(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    defaults = admin_of(ctx).topic_defaults
    out = []
    for r in req.resources:
        row: dict[str, Any] = dict(error_code=E.NONE, error_message=None,
                                   resource_type=r.resource_type,
                                   resource_name=r.resource_name, configs=[])
        why = _refused(ctx, conn, r, Op.DESCRIBE, Op.STATUS)
        if why:
            row.update(error_code=why[0], error_message=why[1])
        elif r.resource_type == C.RESOURCE_TOPIC:
            try:
                cfg = _topic(ctx, r.resource_name)
                keys = tuple(r.configuration_keys) if r.configuration_keys is not None else None
                row["configs"] = C.describe(cfg, defaults, keys)
            except EdgebusError as e:
                row.update(error_code=E.code_of(e), error_message=str(e))
        elif r.resource_type != C.RESOURCE_BROKER:
            row.update(error_code=E.INVALID_REQUEST,
                       error_message=f"resource type {r.resource_type} is not supported "
                                     "(topics: 2, brokers: 4)")
        out.append(row)
    return response(header, results=out)


def incremental_alter_configs(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    """SET, DELETE (back to the default), APPEND/SUBTRACT for lists, per named setting."""
    def entries(r: Any, current: TopicConfig, defaults: TopicConfig) -> dict[str, str]:
        return C.entries_for([(c.name, c.config_operation, c.value) for c in r.configs],
                             current, defaults)

    return response(header, responses=_alter(ctx, conn, req, entries, "IncrementalAlterConfigs"))


def alter_configs(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    """The older whole-set form (confluent-kafka's and aiokafka's alter_configs): the topic's
    settings become exactly those named, every other one back to its default, as in Kafka."""
    def entries(r: Any, current: TopicConfig, defaults: TopicConfig) -> dict[str, str]:
        out = {c.key: C.value_of(c, defaults) for c in C.CONFIGS if c.key}
        out.update(C.entries_for([(c.name, C.OP_SET, c.value) for c in r.configs], defaults,
                                 defaults))
        return out

    return response(header, responses=_alter(ctx, conn, req, entries, "AlterConfigs"))


def _alter(ctx: Any, conn: Any, req: Any,
           entries_of: Callable[[Any, TopicConfig, TopicConfig], dict[str, str]],
           api: str) -> list[dict[str, Any]]:
    defaults = admin_of(ctx).topic_defaults
    out = []
    for r in req.resources:
        row: dict[str, Any] = dict(error_code=E.NONE, error_message=None,
                                   resource_type=r.resource_type,
                                   resource_name=r.resource_name)
        out.append(row)
        why = _refused(ctx, conn, r, Op.ALTER, Op.ADMIN)
        if why:
            row.update(error_code=why[0], error_message=why[1])
            continue
        if r.resource_type != C.RESOURCE_TOPIC:
            row.update(error_code=E.INVALID_REQUEST, error_message=(
                "only topic configs can be altered here; the broker's settings are in the "
                "supervisor's config file (edgebus.yaml), applied on SIGHUP"))
            continue
        try:
            current = _topic(ctx, r.resource_name)
            try:
                new = TopicConfig.from_entries(entries_of(r, current, defaults), base=current)
            except InvalidRequestError as e:
                row.update(error_code=E.INVALID_CONFIG, error_message=str(e))
                continue
            if not req.validate_only:
                ctx.logs.alter_topic_config(r.resource_name, new)
                log.info("altered topic %s: %s (Kafka %s)", r.resource_name,
                         describe_changes(current, new) or "no change", api)
        except EdgebusError as e:
            row.update(error_code=E.code_of(e), error_message=str(e))
    return out


# ListConfigResources (kafka-python's list_config_resources) resource types: Kafka's ConfigResource
# types. Client-metrics and group configs do not exist here, so they list nothing.
LISTED_TYPES = (C.RESOURCE_TOPIC, C.RESOURCE_BROKER)
OTHER_TYPES = (8, 16, 32)  # BROKER_LOGGER, CLIENT_METRICS, GROUP


def list_config_resources(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    """The resources DescribeConfigs describes: every topic the principal may describe, and the
    broker (node 0) for one with status on the cluster. v0 asks for client-metrics resources only:
    none."""
    wanted = set(getattr(req, "resource_types", ()) or LISTED_TYPES)  # v0: client metrics
    if header.request_api_version == 0:
        wanted = set()
    unknown = wanted - set(LISTED_TYPES) - set(OTHER_TYPES)
    if unknown:
        return response(header, error_code=E.INVALID_REQUEST, config_resources=[])
    out: list[dict[str, Any]] = []
    if C.RESOURCE_TOPIC in wanted:
        out.extend(dict(resource_name=n, resource_type=C.RESOURCE_TOPIC)
                   for n in sorted(ctx.logs.topics())
                   if not n.startswith("__") and visible(ctx, conn, Kind.TOPIC, n))
    acl = acl_of(ctx)
    if C.RESOURCE_BROKER in wanted and (acl is None or acl.allowed(conn, Kind.CLUSTER, Op.STATUS,
                                                                   "*")):
        out.append(dict(resource_name=str(NODE_ID), resource_type=C.RESOURCE_BROKER))
    return response(header, error_code=E.NONE, config_resources=out)
