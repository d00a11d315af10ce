"""What the group and admin handlers take from the listener's KafkaContext, in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from edgebus.errors import EdgebusError
from edgebus.server.handlers.data import now_ms
from edgebus.server.kafka.apis import DEFERRED
from edgebus.server.kafka.codec import encode_response
from edgebus.server.kafka.context import NODE_ID

if TYPE_CHECKING:
    from edgebus.server.groups.handlers import GroupHandlers
    from edgebus.server.handlers.admin import AdminHandlers
    from edgebus.server.kafka.context import KafkaContext

# Kafka's protocol type of consumer groups (the only kind edgebus has).
PROTOCOL_TYPE = "consumer"

__all__ = ["DEFERRED", "PROTOCOL_TYPE", "admin_of", "after_fsync", "answer",
           "coordinator_address", "delete_after_fsync", "groups_of"]


def groups_of(ctx: KafkaContext) -> GroupHandlers:
    """The supervisor's GroupHandlers (coordinator, offset store, durable acks)."""
    return ctx.groups


def admin_of(ctx: KafkaContext) -> AdminHandlers:
    """The supervisor's native AdminHandlers (topic defaults, delete_topic's clean-up)."""
    return ctx.admin


def answer(ctx: KafkaContext, conn: Any, header: Any, resp: Any) -> None:
    ctx.answer(conn, header, resp)


def coordinator_address(ctx: KafkaContext) -> tuple[int, str, int]:
    """(node id, host, port) of this broker as clients reach it: every group's coordinator."""
    host, port = ctx.advertised
    return NODE_ID, host, port


def after_fsync(ctx: KafkaContext, conn: Any, header: Any, partition: Any, resp: Any,
                on_error: Callable[[BaseException], Any]) -> Any:
    """Answer `resp` once `partition` is fsynced (group commit), or `on_error(err)` (a response
    carrying the error) if the fsync fails; returns DEFERRED. Frames are encoded here: the
    durable-ack machinery hands bytes to the connection as they are."""
    def encode(r: Any) -> bytes:
        return encode_response(header.request_api_key, header.request_api_version,
                               header.correlation_id, r)

    frame = encode(resp)
    ctx.durable.add_after_sync(conn, header.correlation_id, [partition],
                               cast(Any, lambda: frame), lambda e: encode(on_error(e)))
    return DEFERRED


def delete_after_fsync(ctx: KafkaContext, conn: Any, header: Any, keys: Any, resp: Any,
                       failed: Callable[[BaseException], Any]) -> Any:
    """Delete `keys` from the group store (tombstones), wake its readers, and answer `resp` once
    they are fsynced; `failed(err)` is the answer to a store or fsync error (DeleteGroups,
    OffsetDelete)."""
    gh = groups_of(ctx)
    try:
        gh.store.delete(keys, now_ms())
    except EdgebusError as e:
        return failed(e)
    p = gh.store.partition
    gh.data.on_append(p)
    return after_fsync(ctx, conn, header, p, resp, failed)
