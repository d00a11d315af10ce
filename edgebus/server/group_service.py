"""Consumer groups made at their first use (issue 16: ~0.5 MB of an idle supervisor's memory).

An idle supervisor whose `__consumer_offsets` holds nothing has no group and no committed
offset, so the group modules (server/groups/) need not be loaded: `LazyGroups` stands on the
loop and in the dispatch table in their place, and makes `GroupHandlers` at the first group
request (join, commit, offset fetch, list, describe, reset: stubs of server/lazy.py), the
first Kafka connection or transaction commit that needs them (Broker.groups), or at start when
the offsets topic holds records (their replay, and the move of commits past a cut tail, are
done at start as before). Until then its loop hooks and the admin's topic events have
nothing to do: no group exists to rebalance, no committed offset to forget.

Loop thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgebus.protocol import messages as M
from edgebus.server.lazy import Handler, OnFirstUse
from edgebus.server.service import LoopApi, Service

if TYPE_CHECKING:
    from edgebus.server.groups.handlers import GroupHandlers

GROUP_APIS = {
    M.Api.JOIN_GROUP: "join_group",
    M.Api.SYNC_GROUP: "sync_group",
    M.Api.HEARTBEAT: "heartbeat",
    M.Api.LEAVE_GROUP: "leave_group",
    M.Api.OFFSET_COMMIT: "offset_commit",
    M.Api.OFFSET_FETCH: "offset_fetch",
    M.Api.LIST_GROUPS: "list_groups",
    M.Api.DESCRIBE_GROUP: "describe_group",
    M.Api.RESET_OFFSETS: "reset_offsets",
}


class LazyGroups(Service):
    """GroupHandlers' loop hooks and topic events, forwarded once it is made."""

    timer_static = True  # as GroupHandlers: its coordinator calls deadline_changed

    def __init__(self, api: LoopApi, make: Callable[[], GroupHandlers]) -> None:
        self.api = api
        self.first: OnFirstUse[GroupHandlers] = OnFirstUse(lambda: self._make(make))

    def _make(self, make: Callable[[], GroupHandlers]) -> GroupHandlers:
        g = make()
        self.api.deadline_changed()  # made outside a tick: the loop asks for its timers anew
        return g

    @property
    def made(self) -> GroupHandlers | None:
        return self.first.made

    def get(self) -> GroupHandlers:
        return self.first.get()

    def install(self, table: dict[int, Handler]) -> None:
        self.first.install(table, {int(k): name for k, name in GROUP_APIS.items()})

    # --- loop events ---------------------------------------------------------------------------
    def connection_closed(self, conn: Any) -> None:
        g = self.first.made
        if g is not None:
            g.connection_closed(conn)

    def next_deadline(self) -> float | None:
        g = self.first.made
        return g.next_deadline() if g is not None else None

    def tick(self, now: float) -> None:
        g = self.first.made
        if g is not None:
            g.tick(now)

    # --- the admin's topic events (handlers/admin.py, reload.py) -------------------------------
    def topic_created(self, topic: str) -> None:
        g = self.first.made
        if g is not None:
            g.topic_created(topic)

    def topic_deleted(self, topic: str) -> None:
        g = self.first.made
        if g is not None:
            g.topic_deleted(topic)
