"""Access control on the Kafka listener: the supervisor's one Authorizer (edgebus/server/acl/),
applied to Kafka's requests as Kafka brokers do, per topic inside the answer.

`guard(apis, acl)` wraps the registered handlers (setup.py): Fetch, ListOffsets and Metadata
are decided here (a topic the principal may not use is taken out of the request and answered
with TOPIC_AUTHORIZATION_FAILED; a Metadata listing leaves out what it may not describe);
Produce asks `may()` for each topic inside its own loop, so that every acks level answers
per partition. The group, admin and transaction handlers ask `refused()` per item and answer
a refusal with DENIED_CODE (29 topic, 30 group, 31 cluster) in that item's place, the rest of
the request going ahead (docs/KAFKA.md, "Access control"). The principal: `sasl:NAME` after
SASL, else the local user owning the client's end of a loopback connection (/proc/net/tcp,
identd's way), else nobody (docs/SECURITY.md).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from edgebus.acl.rules import Kind, Op
from edgebus.errors import AuthorizationError
from edgebus.server.acl.authorizer import SLOTS
from edgebus.server.kafka.apis import KafkaApi
from edgebus.server.kafka.codec import build, response_module

if TYPE_CHECKING:
    from edgebus.server.acl import Authorizer
    from edgebus.server.kafka.context import KafkaContext
    from edgebus.server.listeners.stream import Connection

PRODUCE, FETCH, LIST_OFFSETS, METADATA = 0, 1, 2, 3
DENIED = ErrorCode.topic_authorization_failed
# Kafka's codes for a refused item, by the kind of resource refused (group/admin handlers).
DENIED_CODE = {Kind.TOPIC: int(ErrorCode.topic_authorization_failed),
               Kind.GROUP: int(ErrorCode.group_authorization_failed),
               Kind.CLUSTER: int(ErrorCode.cluster_authorization_failed)}
_READ, _WRITE, _DESCRIBE = (SLOTS[(Kind.TOPIC, o)] for o in (Op.READ, Op.WRITE, Op.DESCRIBE))


def acl_of(ctx: KafkaContext) -> Authorizer | None:
    a: Authorizer | None = ctx.parts.get("acl")
    return a


def may(ctx: KafkaContext, conn: Connection, op: str, topic: str) -> str | None:
    """None if `conn` may do `op` on `topic`, else the reason (counted and logged as every
    denial is). For handlers that answer per partition (Produce)."""
    return refused(ctx, conn, Kind.TOPIC, op, topic)


def refused(ctx: Any, conn: Any, kind: Kind, op: Op | str, name: str) -> str | None:
    """None if `conn` may do `op` on the resource, else the reason (counted and logged as
    every denial is). The group and admin handlers ask it per item (docs/SECURITY.md) and
    answer a refusal with DENIED_CODE[kind] in that item's place; the rest proceeds."""
    a = acl_of(ctx)
    if a is None:
        return None
    try:
        a.authorize(conn, op, (kind, name))
    except AuthorizationError as e:
        return str(e)
    return None


def visible(ctx: Any, conn: Any, kind: Kind, name: str) -> bool:
    """Whether a listing shows the resource to `conn` (describe; a no is not a denial)."""
    a = acl_of(ctx)
    return a is None or a.allowed(conn, kind, Op.DESCRIBE, name)


def _denied(a: Authorizer, conn: Any, slot: int, topic: str) -> bool:
    try:
        a.check(conn, slot, topic)
    except AuthorizationError:
        return True
    return False


def guard(apis: dict[int, KafkaApi], acl: Authorizer | None) -> dict[int, KafkaApi]:
    """The registry with Fetch, ListOffsets and Metadata checked (unchanged without ACLs)."""
    if acl is None:
        return apis
    out = dict(apis)
    for key, fn in ((FETCH, _fetch), (LIST_OFFSETS, _list_offsets), (METADATA, _metadata)):
        if key in out:
            out[key] = dataclasses.replace(out[key], handler=functools.partial(fn, acl, out[key].handler))
    return out


def _fetch(acl: Authorizer, handler: Any, ctx: KafkaContext, conn: Connection, header: Any,
           req: Any) -> Any:
    denied = [t for t in req.topics if _denied(acl, conn, _READ, t.topic)]
    if not denied:
        return handler(ctx, conn, header, req)
    from edgebus.server.kafka.fetch import read
    from edgebus.server.kafka.hot import fetch_response

    # Answered now (a fetch with an error is never parked), the allowed topics read as usual.
    allowed = tuple(t for t in req.topics if t not in denied)
    topics, _, out, _ = read(ctx, dataclasses.replace(req, topics=allowed))
    for topic, data in out:  # what status and metrics count as bytes out
        ctx.stats.bytes_sent(topic, data)
    topics += [(t.topic, [(fp.partition, int(DENIED), -1, -1, -1, None, b"") for fp in t.partitions])
               for t in denied]
    return fetch_response(header.request_api_version, header.correlation_id, topics)


def _list_offsets(acl: Authorizer, handler: Any, ctx: KafkaContext, conn: Connection,
                  header: Any, req: Any) -> Any:
    denied = [t for t in req.topics if _denied(acl, conn, _DESCRIBE, t.name)]
    if not denied:
        return handler(ctx, conn, header, req)
    allowed = tuple(t for t in req.topics if t not in denied)
    resp = handler(ctx, conn, header, dataclasses.replace(req, topics=allowed))
    mod = response_module(LIST_OFFSETS, header.request_api_version)
    errors = tuple(
        build(mod.ListOffsetsTopicResponse, name=t.name, partitions=tuple(
            build(mod.ListOffsetsPartitionResponse, partition_index=lp.partition_index,
                  error_code=DENIED, timestamp=-1, offset=-1, old_style_offsets=(),
                  leader_epoch=-1)
            for lp in t.partitions))
        for t in denied)
    return dataclasses.replace(resp, topics=resp.topics + errors)


def _metadata(acl: Authorizer, handler: Any, ctx: KafkaContext, conn: Connection, header: Any,
              req: Any) -> Any:
    resp = handler(ctx, conn, header, req)
    listing = req.topics is None or (header.request_api_version == 0 and not req.topics)
    out = []
    for t in resp.topics:
        if listing:  # what it may not describe is left out, uncounted
            if acl.allowed(conn, Kind.TOPIC, Op.DESCRIBE, t.name):
                out.append(t)
        elif _denied(acl, conn, _DESCRIBE, t.name):  # by name: whether it exists or not
            out.append(dataclasses.replace(t, error_code=DENIED, partitions=()))
        else:
            out.append(t)
    return dataclasses.replace(resp, topics=tuple(out))
