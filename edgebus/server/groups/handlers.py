"""The group APIs on the supervisor's loop: glue between the loop, the coordinator and the
offset store. Listed in the dispatch table by edgebus/server/dispatch.py; as a service, the
coordinator's timers and the offsets cleaner are its deadlines.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from edgebus.errors import (
    EdgebusError,
    GroupNotEmptyError,
    InvalidRequestError,
    InvalidTopicError,
    NotAMirrorError,
    ShuttingDownError,
    UnknownGroupError,
)
from edgebus.protocol import groups as G
from edgebus.protocol import messages as M
from edgebus.protocol.codec import Message
from edgebus.server.dispatch import DEFERRED
from edgebus.server.durable import DurableAcks
from edgebus.server.groups.coordinator import Coordinator, State, by_topic, check_group_id
from edgebus.server.groups.offsets import OffsetStore
from edgebus.server.handlers.data import now_ms
from edgebus.server.service import LoopApi, Service

if TYPE_CHECKING:
    from edgebus.log.manager import LogManager
    from edgebus.server.handlers.data import DataHandlers

log = logging.getLogger("edgebus.groups")



def _internal(topic: str) -> bool:
    return topic.startswith("__")


class GroupHandlers(Service):
    timer_static = True  # the coordinator says when its timers move (Coordinator.on_timer)

    def __init__(self, api: LoopApi, logs: LogManager, data: DataHandlers, durable: DurableAcks,
                 *, initial_rebalance_delay_ms: int = 0, store: OffsetStore | None = None) -> None:
        self.api = api
        self.logs = logs
        self.data = data  # on_append: fetches parked on __consumer_offsets
        self.durable = durable
        self.store = store or OffsetStore(logs)
        self.store.open()
        self.coordinator = Coordinator(self._partitions_of,
                                       initial_rebalance_delay_ms=initial_rebalance_delay_ms,
                                       last_generation=self._last_generation)
        self.coordinator.on_timer = api.deadline_changed

    def _last_generation(self, group_id: str) -> int:
        return max((c.generation for c in self.store.group_offsets(group_id).values()), default=0)

    def _partitions_of(self, topic: str) -> int:
        if _internal(topic):
            return 0
        cfg = self.logs.topics().get(topic)
        return cfg.partitions if cfg is not None else 0

    # --- loop events -----------------------------------------------------------------------------
    def connection_closed(self, conn: Any) -> None:
        self.coordinator.connection_closed(conn.id)

    def next_deadline(self) -> float | None:
        return self.coordinator.next_deadline()

    def tick(self, now: float) -> None:
        try:
            self.coordinator.tick(now)
        except Exception:  # a bug here must not take the supervisor down for everyone
            log.exception("internal error in the group coordinator's timers")

    def topic_created(self, topic: str) -> None:
        self.coordinator.topic_changed(topic)

    def topic_deleted(self, topic: str) -> None:
        self.coordinator.topic_changed(topic)
        try:
            if self.store.delete_topic(topic, now_ms()):
                self.data.on_append(self.store.partition)
        except EdgebusError as e:
            log.error("forgetting the committed offsets of deleted topic %s: %s", topic, e)

    # --- membership ------------------------------------------------------------------------------
    def join_group(self, conn: Any, corr: int, req: G.JoinGroupRequest) -> Any:
        if self.api.stopping:
            raise ShuttingDownError("the supervisor is shutting down")
        # Answered when the rebalance completes: a JoinGroupResponse or an EdgebusError.
        self.coordinator.join(conn.id, conn.pid, req, functools.partial(self.api.answer, conn, corr))
        return DEFERRED

    def sync_group(self, conn: Any, corr: int, req: G.SyncGroupRequest) -> G.SyncGroupResponse:
        return self.coordinator.sync(req)

    def heartbeat(self, conn: Any, corr: int, req: G.HeartbeatRequest) -> M.Empty:
        self.coordinator.heartbeat(req)
        return M.Empty()

    def leave_group(self, conn: Any, corr: int, req: G.LeaveGroupRequest) -> M.Empty:
        self.coordinator.leave(req)
        return M.Empty()

    # --- offsets ---------------------------------------------------------------------------------
    def _check_capacity(self, group_id: str) -> None:
        known = self.coordinator.groups.keys() | self.store.table.keys()
        if group_id not in known and len(known) >= G.MAX_GROUPS:
            raise InvalidRequestError(f"the supervisor already holds {G.MAX_GROUPS} groups")

    def offset_commit(self, conn: Any, corr: int, req: G.OffsetCommitRequest) -> Any:
        if self.api.stopping:
            raise ShuttingDownError("the supervisor is shutting down")
        self.coordinator.check_commit(req.group_id, req.generation, req.member_id)
        if req.group_id not in self.store.table:
            self._check_capacity(req.group_id)
        results = []
        entries = []
        for o in req.offsets:
            try:
                if _internal(o.topic):
                    raise InvalidTopicError(f"{o.topic!r} is an internal topic")
                if conn.node is not None:  # a replica link mirrors commits of its own mirrors only
                    mirror_of = self.logs.partition(o.topic, o.partition).config.mirror_of
                    if not mirror_of.startswith(f"{conn.node}/"):
                        raise NotAMirrorError(
                            f"topic {o.topic!r} is not a mirror of node {conn.node}; a replica "
                            "link commits offsets of its own mirrors only")
                if o.offset < 0:
                    raise InvalidRequestError(f"offset {o.offset} is negative")
                if len(o.metadata.encode()) > G.MAX_COMMIT_METADATA:
                    raise InvalidRequestError(
                        f"metadata is longer than {G.MAX_COMMIT_METADATA} bytes")
                self.logs.partition(o.topic, o.partition)
            except EdgebusError as e:
                results.append(G.OffsetCommitResult(o.topic, o.partition, e.code, str(e)))
                continue
            results.append(G.OffsetCommitResult(o.topic, o.partition, 0, ""))
            entries.append((o.topic, o.partition, o.offset, o.metadata))
        now = now_ms()
        resp = G.OffsetCommitResponse(now, results)
        if not entries:
            return resp
        return self._commit_durably(conn, corr, req.group_id, entries, req.generation, now, resp)

    def _commit_durably(self, conn: Any, corr: int, group_id: str, entries: list[Any],
                        generation: int, now: int, resp: Message) -> Any:
        """Append, then answer after the fsync that covers it (group commit)."""
        p = self.store.commit(group_id, entries, generation, now)
        self.data.on_append(p)
        self.durable.add(conn, corr, p, resp)
        return DEFERRED

    def offset_fetch(self, conn: Any, corr: int,
                     req: G.OffsetFetchRequest) -> G.OffsetFetchResponse:
        check_group_id(req.group_id)
        if req.partitions:
            tps = [(t.topic, p) for t in req.partitions for p in t.partitions]
        else:
            tps = sorted(self.store.group_offsets(req.group_id))
        out = []
        for tp in tps:
            c = self.store.get(req.group_id, tp)
            if c is None:
                out.append(G.CommittedOffset(tp[0], tp[1], G.NO_OFFSET, "", -1))
            else:
                out.append(G.CommittedOffset(tp[0], tp[1], c.offset, c.metadata, c.commit_time))
        return G.OffsetFetchResponse(out)

    # --- operator views --------------------------------------------------------------------------
    def list_groups(self, conn: Any, corr: int, req: M.Empty) -> G.ListGroupsResponse:
        out = []
        for gid in sorted(self.coordinator.groups.keys() | self.store.table.keys()):
            g = self.coordinator.groups.get(gid)
            if g is None:
                out.append(G.GroupListing(gid, State.EMPTY.value, "", 0))
            else:
                out.append(G.GroupListing(gid, g.state.value, g.assignor, len(g.members)))
        return G.ListGroupsResponse(out)

    def describe_group(self, conn: Any, corr: int,
                       req: G.DescribeGroupRequest) -> G.DescribeGroupResponse:
        check_group_id(req.group_id)
        g = self.coordinator.groups.get(req.group_id)
        offsets = self.store.group_offsets(req.group_id)
        if g is None and not offsets:
            raise UnknownGroupError(f"group {req.group_id!r} has no members and no committed "
                                    "offsets")
        members = []
        tps = set(offsets)
        if g is not None:
            for mid, m in sorted(g.members.items()):
                assigned = g.assignment.get(mid, []) if g.state is State.STABLE else []
                tps.update(assigned)
                members.append(G.MemberDescription(mid, m.client_id, m.pid, m.session_timeout_ms,
                                                   by_topic(assigned)))
        # Every partition of a topic the group has any offset or assignment in, so that a
        # partition nobody committed yet shows up (with an unknown lag) instead of hiding.
        for topic in {t for t, _ in tps}:
            tps.update((topic, i) for i in range(self._partitions_of(topic)))
        owners = self.coordinator.owner_of(req.group_id)
        parts = []
        for topic, part in sorted(tps):
            try:
                end = self.logs.partition(topic, part).log_end_offset
            except EdgebusError:
                end = -1
            c = offsets.get((topic, part))
            committed = c.offset if c is not None else G.NO_OFFSET
            lag = max(0, end - committed) if end >= 0 and committed >= 0 else -1
            parts.append(G.PartitionLag(
                topic, part, committed, c.metadata if c else "", c.commit_time if c else -1,
                end, lag, owners.get((topic, part), "")))
        state = g.state.value if g is not None else State.EMPTY.value
        return G.DescribeGroupResponse(req.group_id, state, g.generation if g else 0,
                                       g.assignor if g else "", members, parts)

    def reset_offsets(self, conn: Any, corr: int, req: G.ResetOffsetsRequest) -> Any:
        check_group_id(req.group_id)
        if self.api.stopping:
            raise ShuttingDownError("the supervisor is shutting down")
        if not self.coordinator.is_empty(req.group_id):
            n = len(self.coordinator.groups[req.group_id].members)
            raise GroupNotEmptyError(f"group {req.group_id} has {n} active member(s); offsets "
                                     "can only be reset while it has none")
        if _internal(req.topic):
            raise InvalidTopicError(f"{req.topic!r} is an internal topic")
        all_parts = self.logs.partitions(req.topic)  # UnknownTopicError
        chosen = [self.logs.partition(req.topic, i) for i in req.partitions] \
            if req.partitions else all_parts
        out = []
        entries = []
        for p in chosen:
            if req.to == G.RESET_EARLIEST:
                target = p.log_start_offset
            elif req.to == G.RESET_LATEST:
                target = p.log_end_offset
            elif req.to == G.RESET_OFFSET:
                target = min(max(req.value, p.log_start_offset), p.log_end_offset)
            elif req.to == G.RESET_TIMESTAMP:
                found = p.offset_for_timestamp(req.value)
                target = found[0] if found is not None else p.log_end_offset
            else:
                raise InvalidRequestError(f"unknown reset target {req.to}")
            prev = self.store.get(req.group_id, (req.topic, p.partition))
            out.append(G.OffsetReset(req.topic, p.partition,
                                     prev.offset if prev else G.NO_OFFSET, target))
            entries.append((req.topic, p.partition, target, ""))
        resp = G.ResetOffsetsResponse(out)
        if req.dry_run or not entries:
            return resp
        if req.group_id not in self.store.table:
            self._check_capacity(req.group_id)
        log.info("group %s: offsets of %s reset by %r", req.group_id, req.topic, conn)
        return self._commit_durably(conn, corr, req.group_id, entries, G.NO_GENERATION,
                                    now_ms(), resp)
