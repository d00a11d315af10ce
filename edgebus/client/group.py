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
all. Commits and committed offsets: client/group_commits.py.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from edgebus.client.group_commits import (  # noqa: F401 (OffsetAndMetadata: its old path)
    GroupCommits,
    OffsetAndMetadata,
    _by_topic,
    _log_failed_autocommit,
)
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
)
from edgebus.protocol import groups as G
from edgebus.protocol import messages as M

log = logging.getLogger("edgebus.consumer.group")

DEFAULT_ASSIGNORS = ("range", "roundrobin", "sticky")


class RebalanceListener:
    """Base class for rebalance callbacks (kafka-python's on_partitions_* names also work)."""

    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Called before the partitions are given up: commit what was processed here."""

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        """Called with the new assignment, before the first fetch from it."""


class GroupMembership(GroupCommits):
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
