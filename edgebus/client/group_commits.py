"""A consumer group member's committed offsets, the client side of OffsetCommit and OffsetFetch:
commit (sync and async, with callbacks run on the application thread), the committed offsets
that give a new assignment its positions. Mixed into GroupMembership (client/group.py), whose
state (the coordinator link, the consumer, the subscription) it uses."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, NamedTuple

from edgebus.client.channel import SyncChannel
from edgebus.client.group_link import CoordinatorLink
from edgebus.client.types import TopicPartition
from edgebus.errors import ClosedError, EdgebusError, IllegalGenerationError, error_for_code
from edgebus.protocol import groups as G
from edgebus.protocol import messages as M

log = logging.getLogger("edgebus.consumer.group")


class OffsetAndMetadata(NamedTuple):
    offset: int
    metadata: str = ""


class GroupCommits:
    # GroupMembership's, set in its __init__.
    consumer: Any
    group_id: str
    request_timeout: float
    _link: CoordinatorLink
    _closed: bool
    _closing: bool
    _last_committed: dict[TopicPartition, int]
    _async_done: deque[tuple[Any, Any, BaseException | None]]

    def _subscribed(self) -> bool:
        raise NotImplementedError  # GroupMembership's

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
        req = G.OffsetFetchRequest(self.group_id, _by_topic(tps))
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
