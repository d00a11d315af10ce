"""What the group and admin handlers take from the listener's KafkaContext, in one place."""

from __future__ import annotations

from typing import Any

from edgebus.server.dispatch import DEFERRED

__all__ = ["DEFERRED", "admin_of", "after_fsync", "answer", "coordinator_address", "groups_of"]


def groups_of(ctx: Any) -> Any:
    """The supervisor's GroupHandlers (coordinator, offset store, durable acks)."""
    return ctx.groups


def answer(ctx: Any, conn: Any, header: Any, resp: Any) -> None:
    ctx.answer(conn, header, resp)


def coordinator_address(ctx: Any) -> tuple[int, str, int]:
    """(node id, host, port) of this broker as clients should reach it: it is every group's
    coordinator."""
    return ctx.node_id, ctx.advertised_host, ctx.advertised_port


def after_fsync(ctx: Any, conn: Any, header: Any, partition: Any, resp: Any) -> Any:
    """Answer `resp` once `partition` is fsynced (group commit); returns DEFERRED."""
    groups_of(ctx).durable.add(conn, header.correlation_id, partition, resp)
    return DEFERRED


def admin_of(ctx: Any) -> Any:
    """The supervisor's native AdminHandlers (topic defaults, delete_topic's clean-up)."""
    return ctx.admin
