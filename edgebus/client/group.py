"""Consumer-group membership, the client side of edgebus.Consumer(group_id=...).

The application thread (the one calling Consumer.poll / commit / close) runs rebalances here: it
commits, calls the listener's on_revoked, joins, syncs, assigns and calls on_assigned, so the
consumer's state and the listener are only ever touched by the application's own thread. The
heartbeats, and the requests themselves, go through a background thread with its own connection
(edgebus/client/group_link.py), so a long poll() or a slow loop body does not stop them.

Rebalances are eager (as Kafka's classic protocol): every member revokes everything, commits, and
rejoins; the coordinator hands out the new assignment. Positions of the new assignment come from
the committed offsets (auto_offset_reset when there are none), so a handover between live members
re-delivers nothing that was committed, and with auto-commit (which commits on revoke) nothing at
all.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, NamedTuple

from edgebus.client.channel import SyncChannel
from edgebus.client.group_link import CoordinatorLink
from edgebus.client.types import TopicPartition
from edgebus.errors import (
    ClosedError,
    EdgebusError,
    IllegalGenerationError,
    OperationTimeoutError,
    RebalanceInProgressError,
    UnknownMemberError,
    UnknownPartitionError,
    UnknownTopicError,
    error_for_code,
)
from edgebus.protocol import groups as G
from edgebus.protocol import messages as M

log = logging.getLogger("edgebus.consumer.group")

DEFAULT_ASSIGNORS = ("range", "roundrobin", "sticky")


class OffsetAndMetadata(NamedTuple):
    offset: int
    metadata: str = ""


class RebalanceListener:
    """Base class for rebalance callbacks (kafka-python's on_partitions_* names also work)."""

    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Called before the partitions are given up: commit what was processed here."""

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        """Called with the new assignment, before the first fetch from it."""


class GroupMembership:
    def __init__(
        self,
        consumer: Any,
        group_id: str,
        *,
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3000,
        max_poll_interval_ms: int = 300_000,
        rebalance_timeout_ms: int | None = None,
        partition_assignment_strategy: Iterable[str] = DEFAULT_ASSIGNORS,
        client_id: str | None = None,
        metadata_max_age_ms: int = 5000,
        request_timeout_ms: int = 30_000,
    ) -> None:
        if not group_id or len(group_id) > G.MAX_GROUP_ID:
            raise ValueError(f"group_id must be 1..{G.MAX_GROUP_ID} characters")
        if not G.MIN_SESSION_TIMEOUT_MS <= session_timeout_ms <= G.MAX_SESSION_TIMEOUT_MS:
            raise ValueError(f"session_timeout_ms must be in [{G.MIN_SESSION_TIMEOUT_MS}, "
                             f"{G.MAX_SESSION_TIMEOUT_MS}], got {session_timeout_ms}")
        if not 0 < heartbeat_interval_ms < session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be positive and below session_timeout_ms "
                             "(a third of it is usual)")
        if auto_commit_interval_ms <= 0 or max_poll_interval_ms <= 0:
            raise ValueError("auto_commit_interval_ms and max_poll_interval_ms must be positive")
        assignors = [partition_assignment_strategy] if isinstance(
            partition_assignment_strategy, str) else list(partition_assignment_strategy)
        if not assignors:
            raise ValueError("partition_assignment_strategy names no assignor")
        self.consumer = consumer
        self.group_id = group_id
        self.enable_auto_commit = enable_auto_commit
        self.auto_commit_interval = auto_commit_interval_ms / 1000
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval = heartbeat_interval_ms / 1000
        self.max_poll_interval = max_poll_interval_ms / 1000
        self.rebalance_timeout_ms = min(rebalance_timeout_ms or max_poll_interval_ms,
                                        G.MAX_REBALANCE_TIMEOUT_MS)
        self.assignors = assignors
        self.client_id = client_id or "edgebus-python"
        self.metadata_max_age = metadata_max_age_ms / 1000
        self.request_timeout = request_timeout_ms / 1000

        # Subscription (application thread only).
        self._topics: list[str] | None = None
        self._pattern: re.Pattern[str] | None = None
        self._listener: Any = None
        self._snapshot: dict[str, int] = {}  # topic -> partitions when we last joined
        self._next_metadata = 0.0
        self._assigned: list[TopicPartition] = []
        self._last_assignment: list[TopicPartition] = []  # reported to the sticky assignor
        self._next_autocommit = time.monotonic() + self.auto_commit_interval
        self._last_committed: dict[TopicPartition, int] = {}
        self._async_done: deque[tuple[Any, Any, BaseException | None]] = deque()

        self._closed = False
        self._closing = False  # close() began (maybe in another thread): the member may have left
        self._link = CoordinatorLink(consumer._ch.path, group_id,
                                     heartbeat_interval=heartbeat_interval_ms / 1000,
                                     max_poll_interval=max_poll_interval_ms / 1000,
                                     request_timeout=self.request_timeout)

    # --- public surface (application thread) ----------------------------------------------------
    @property
    def generation(self) -> int:
        ident = self._link.identity
        return ident[1] if ident else G.NO_GENERATION

    @property
    def member_id(self) -> str:
        ident = self._link.identity
        return ident[0] if ident else ""

    def subscribe(self, topics: Iterable[str] | str | None, pattern: str | None,
                  listener: Any) -> None:
        if (topics is None) == (pattern is None):
            raise ValueError("subscribe() takes topics or a pattern, exactly one of them")
        if isinstance(topics, str):
            topics = [topics]
        self._topics = sorted(set(topics)) if topics is not None else None
        self._pattern = re.compile(pattern) if pattern is not None else None
        self._listener = listener
        self._next_metadata = 0.0
        self._link.rejoin()

    def subscription(self) -> set[str] | None:
        """The topics named by subscribe(), or those a pattern matched at the last rebalance;
        None when not subscribed."""
        if self._topics is not None:
            return set(self._topics)
        if self._pattern is not None:
            return set(self._snapshot)
        return None

    def unsubscribe(self) -> None:
        """Commit (with auto-commit) and revoke what is assigned, leave the group, and forget
        the subscription. A later subscribe() joins as a new member."""
        self._check_open()
        ident = self._link.identity
        self._link.pause_heartbeats()
        if self._subscribed() and (ident is not None or self._assigned):
            self._revoke()
        if ident is not None:
            try:
                self._link.request(M.Api.LEAVE_GROUP, G.LeaveGroupRequest(self.group_id, ident[0]))
            except EdgebusError as e:
                log.debug("group %s: leave failed: %s", self.group_id, e)
            self._link.left()
        self._deliver_async()
        self._topics = None
        self._pattern = None
        self._listener = None
        self._snapshot = {}
        self._assigned = []
        self._last_assignment = []  # a new member owns nothing (the sticky assignor's input)

    def poll(self) -> None:
        """Called by the consumer at the start of every fetch round."""
        # Runs on every poll: the checks of _check_open, _deliver_async and _subscribed are
        # inlined (a call each less per poll).
        if self._closed:
            raise ClosedError("the consumer is closed")
        now = time.monotonic()
        self._link.polled()
        if self._async_done:
            self._deliver_async()
        if self._topics is not None or self._pattern is not None:
            if now >= self._next_metadata and self._link.identity is not None:
                self._next_metadata = now + self.metadata_max_age
                if self._resolve() != self._snapshot:
                    log.info("group %s: subscribed topics changed; rejoining", self.group_id)
                    self._link.rejoin()
            if self._link.need_rejoin:
                self._rebalance()
        if self.enable_auto_commit and now >= self._next_autocommit:
            self._next_autocommit = now + self.auto_commit_interval
            offsets = self._positions()
            if any(self._last_committed.get(tp) != o.offset for tp, o in offsets.items()):
                self.commit_async(offsets, _log_failed_autocommit)

    def partition_gone(self, tp: TopicPartition) -> bool:
        """A fetch found the partition's topic deleted. Subscribed: stop fetching it and rejoin
        (True). Manually assigned: False, the caller reports the error."""
        if not self._subscribed():
            return False
        self.consumer.assign([p for p in self.consumer._assigned if p != tp])
        self._assigned = [p for p in self._assigned if p != tp]
        self._link.rejoin()
        return True

    def fill_committed(self, missing: list[TopicPartition]) -> list[TopicPartition]:
        """Set the consumer's position of each partition with a committed offset; return the
        partitions that have none."""
        found = self._fetch_committed(missing)
        left = []
        for tp in missing:
            off = found.get(tp)
            if off is None:
                left.append(tp)
            else:
                self.consumer._positions[tp] = off.offset
        return left

    def committed(self, tp: TopicPartition) -> int | None:
        c = self._fetch_committed([tp]).get(tp)
        return c.offset if c is not None else None

    def committed_metadata(self, tp: TopicPartition) -> OffsetAndMetadata | None:
        return self._fetch_committed([tp]).get(tp)

    def commit(self, offsets: dict[TopicPartition, Any] | None = None) -> None:
        """Commit synchronously (default: the position of every assigned partition); returns
        once the supervisor has made the commit durable."""
        self._check_open()
        self._deliver_async()
        todo = self._normalise(offsets)
        if todo:
            try:
                self._link.call(self._commit_job(todo), self.request_timeout)
            except EdgebusError as e:
                if self._closing:  # close() in another thread left the group under this commit
                    raise ClosedError("the consumer is closed") from e
                raise
        self._deliver_async()

    def commit_async(self, offsets: dict[TopicPartition, Any] | None = None,
                     callback: Callable[..., None] | None = None) -> Future[Any]:
        """Queue a commit; callback(offsets, error_or_None) runs on the application thread during
        a later poll(), commit() or close(). Returns a Future of the commit."""
        self._check_open()
        todo = self._normalise(offsets)
        fut: Future[Any] = Future()
        if not todo:
            fut.set_result(None)
            if callback is not None:
                self._async_done.append((callback, todo, None))
            return fut
        fut = self._link.submit(self._commit_job(todo))
        if callback is not None:
            fut.add_done_callback(lambda f: self._async_done.append((callback, todo, f.exception())))
        return fut

    def close(self, autocommit: bool = True) -> None:
        if self._closed:
            return
        self._closing = True
        try:
            # Another thread's rebalance under way (its JoinGroup may wait minutes for a silent
            # member): a commit or a leave would wait behind it, and the revocation (its commit,
            # on_revoked) is done; closing the connection removes the member.
            ident = None if self._link.rebalancing else self._link.identity
            if ident is not None or not self._subscribed():
                if autocommit and self.enable_auto_commit:
                    try:
                        self.commit()
                    except EdgebusError as e:
                        log.warning("group %s: final commit failed: %s", self.group_id, e)
                if self._subscribed():
                    self._call_listener("on_revoked", list(self._assigned))
            if ident is not None:
                try:
                    self._link.request(M.Api.LEAVE_GROUP,
                                       G.LeaveGroupRequest(self.group_id, ident[0]))
                except EdgebusError as e:
                    log.debug("group %s: leave failed: %s", self.group_id, e)
            self._deliver_async()
        finally:
            self._closed = True
            self._link.close()

    # --- rebalancing (application thread) -------------------------------------------------------
    def _subscribed(self) -> bool:
        return self._topics is not None or self._pattern is not None

    def _resolve(self) -> dict[str, int]:
        """Subscribed topic -> partition count now (0 for a topic that does not exist yet)."""
        ch = self.consumer._ch
        if self._pattern is not None:
            resp = ch.request(M.Api.METADATA, M.MetadataRequest([]))
            return {t.name: len(t.partitions) for t in resp.topics
                    if not t.error_code and not t.name.startswith("__")
                    and self._pattern.fullmatch(t.name)}
        assert self._topics is not None
        if not self._topics:
            return {}
        resp = ch.request(M.Api.METADATA, M.MetadataRequest(list(self._topics)))
        return {t.name: 0 if t.error_code else len(t.partitions) for t in resp.topics}

    def _rebalance(self) -> None:
        link = self._link
        link.pause_heartbeats()  # a heartbeat of the old generation would only confuse things
        if link.identity is not None or self._assigned:
            self._revoke()
        snapshot = self._resolve()
        topics = sorted(snapshot)
        owned = _by_topic(self._last_assignment)
        join_timeout = self.rebalance_timeout_ms / 1000 + self.request_timeout
        deadline = time.monotonic() + 2 * join_timeout

        def make(member_id: str) -> G.JoinGroupRequest:
            return G.JoinGroupRequest(self.group_id, member_id, self.client_id,
                                      self.session_timeout_ms, self.rebalance_timeout_ms, topics,
                                      self.assignors, owned)

        while True:
            if time.monotonic() > deadline:
                raise OperationTimeoutError(f"could not join group {self.group_id}")
            try:
                resp = link.join_request(make, join_timeout)
                sync = link.request(M.Api.SYNC_GROUP, G.SyncGroupRequest(
                    self.group_id, resp.generation, resp.member_id))
            except UnknownMemberError:
                link.forget_member_id()  # removed meanwhile: join as a new member
                continue
            except (RebalanceInProgressError, IllegalGenerationError):
                continue  # another rebalance began right away: join it
            break
        assigned = [TopicPartition(t.topic, p) for t in sync.assignment for p in t.partitions]
        link.joined(resp.member_id, resp.generation)
        self._snapshot = snapshot
        self._next_metadata = time.monotonic() + self.metadata_max_age
        self._assigned = assigned
        self._last_assignment = assigned
        self.consumer.assign(assigned)
        log.info("group %s: generation %d, member %s, assignor %s, assigned %s", self.group_id,
                 resp.generation, resp.member_id, resp.assignor,
                 ", ".join(f"{t}-{p}" for t, p in assigned) or "nothing")
        self._call_listener("on_assigned", list(assigned))

    def _revoke(self) -> None:
        revoked = list(self._assigned)
        if self.enable_auto_commit and self._link.identity is not None:
            try:
                self.commit()
            except (IllegalGenerationError, UnknownMemberError, RebalanceInProgressError) as e:
                log.warning("group %s: offsets not committed before the rebalance: %s",
                            self.group_id, e)
            except (UnknownTopicError, UnknownPartitionError) as e:
                # A topic deleted under the subscription (what this rebalance is often for): the
                # supervisor committed the other partitions; the gone one's offset means nothing.
                log.info("group %s: %s; the other offsets are committed", self.group_id, e)
        self._call_listener("on_revoked", revoked)
        self.consumer.assign([])
        self._assigned = []

    def _call_listener(self, what: str, tps: list[TopicPartition]) -> None:
        listener = self._listener
        if listener is None:
            return
        kafka_name = {"on_revoked": "on_partitions_revoked",
                      "on_assigned": "on_partitions_assigned"}[what]
        fn = getattr(listener, what, None) or getattr(listener, kafka_name, None)
        if fn is None:
            return
        try:
            fn(tps)
        except Exception:
            log.exception("group %s: the rebalance listener's %s raised", self.group_id, what)

    # --- offsets ---------------------------------------------------------------------------------
    def _positions(self) -> dict[TopicPartition, OffsetAndMetadata]:
        pos = self.consumer._positions
        return {tp: OffsetAndMetadata(pos[tp]) for tp in self.consumer._assigned if tp in pos}

    def _normalise(self, offsets: dict[TopicPartition, Any] | None
                   ) -> dict[TopicPartition, OffsetAndMetadata]:
        if offsets is None:
            return self._positions()
        out = {}
        for tp, o in offsets.items():
            tp = TopicPartition(*tp)
            if isinstance(o, int):
                out[tp] = OffsetAndMetadata(o)
            else:
                off, meta = (o.offset, o.metadata) if hasattr(o, "offset") else tuple(o)
                out[tp] = OffsetAndMetadata(int(off), meta or "")
        return out

    def _commit_job(self, todo: dict[TopicPartition, OffsetAndMetadata]
                    ) -> Callable[[SyncChannel], None]:
        if self._subscribed():
            ident = self._link.identity
            if ident is None:
                raise IllegalGenerationError(
                    f"the consumer has not joined group {self.group_id} (yet): poll() first")
        else:
            ident = ("", G.NO_GENERATION)  # manual assignment: a "simple" commit
        req = G.OffsetCommitRequest(
            self.group_id, ident[1], ident[0],
            [G.OffsetCommitPartition(tp.topic, tp.partition, o.offset, o.metadata)
             for tp, o in sorted(todo.items())])

        def run(ch: SyncChannel) -> None:
            resp = ch.request(M.Api.OFFSET_COMMIT, req)
            for r in resp.partitions:
                if r.error_code:
                    raise error_for_code(r.error_code, f"{r.topic}-{r.partition}: "
                                                       f"{r.error_message}")
            for tp, o in todo.items():
                self._last_committed[tp] = o.offset

        return run

    def _fetch_committed(self, tps: list[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
        if not tps:
            return {}
        by: dict[str, list[int]] = {}
        for t, p in tps:
            by.setdefault(t, []).append(p)
        req = G.OffsetFetchRequest(self.group_id, [G.TopicPartitions(t, ps)
                                                   for t, ps in sorted(by.items())])
        resp = self._link.request(M.Api.OFFSET_FETCH, req)
        return {TopicPartition(o.topic, o.partition): OffsetAndMetadata(o.offset, o.metadata)
                for o in resp.offsets if o.offset >= 0}

    def _deliver_async(self) -> None:
        while self._async_done:
            cb, offsets, err = self._async_done.popleft()
            try:
                cb(offsets, err)
            except Exception:
                log.exception("group %s: a commit callback raised", self.group_id)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the consumer is closed")


def _by_topic(tps: Iterable[TopicPartition]) -> list[G.TopicPartitions]:
    out: dict[str, list[int]] = {}
    for t, p in sorted(tps):
        out.setdefault(t, []).append(p)
    return [G.TopicPartitions(t, ps) for t, ps in out.items()]


def _log_failed_autocommit(offsets: Any, err: BaseException | None) -> None:
    if err is not None:
        log.warning("auto-commit of %d partition(s) failed: %s", len(offsets), err)
