"""One link's runner: a thread that ships every matching source partition to its target, forever.

Each session: connect to the target and the local supervisor, read every partition's cursor
from the target (never from a local note: after any crash the target's log end is the truth),
then loop: one FETCH over all partitions (long-poll when the last round moved nothing), ship
what came, advance the cursors to what the target answered. Any failure ends the session; the
next one starts after a backoff with jitter and reads the cursors again, so nothing is skipped
and a batch the target already holds is recognised there, not sent twice into the log.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path

from bridges.replicator.config import LinkConfig
from bridges.replicator.inflight import InFlight, Shipment
from bridges.replicator.link_budget import ReadBudget
from bridges.replicator.link_status import GapCount, LinkStatus, PartitionState
from bridges.replicator.refused import Refused
from bridges.replicator.sessions import SessionLoop, bounded_heartbeat
from bridges.replicator.targets.base import GapTarget, Target, TargetRefusedError
from bridges.replicator.targets.peer import PeerTarget
from edgebus import Admin, BatchReader, PartitionRead, TopicInfo, TopicPartition
from edgebus.errors import (
    IncarnationMismatchError,
    NotAMirrorError,
    OffsetOutOfRangeError,
)

GAP_RETENTION, GAP_MAX_AGE = 1, 2  # reason codes of a gap record (edgebus/log/gaps.py)

log = logging.getLogger("edgebus.replicator")

TOPIC_REFRESH_S = 5.0  # how soon a new matching topic starts replicating
GROUP_SYNC_S = 2.0  # how often consumer groups' committed offsets are mirrored
IDLE_WAIT_MS = 500  # long-poll of the source when nothing moved (idle is idle: no spinning)
# Shipments in flight at once on a target that ships partitions in parallel (NATS: one atomic
# batch per subject): each holds its read's buffer (at most READ_BYTES) until answered.
MAX_PARALLEL = 4


def make_target(cfg: LinkConfig, node: str) -> Target:
    if cfg.target == "peer":
        return PeerTarget(cfg.name, cfg.address, node, cfg.token, cfg.durable, cfg.tls,
                          timeout=2 * cfg.heartbeat_s, compression=cfg.compression)
    if cfg.target == "kafka" and cfg.kafka is not None:
        from bridges.replicator.targets.kafka import KafkaTarget

        return KafkaTarget(cfg.name, cfg.kafka, node, timeout=2 * cfg.heartbeat_s)
    if cfg.target == "nats":
        from bridges.replicator.targets.nats import NatsTarget  # nats-py only when used

        return NatsTarget(cfg, node, timeout=2 * cfg.heartbeat_s)
    raise ValueError(f"unknown target kind {cfg.target!r}")


class LinkRunner(SessionLoop):
    def __init__(self, cfg: LinkConfig, node: str, socket: Path | None,
                 stop: threading.Event, target: Target | None = None) -> None:
        self.cfg = cfg
        self.label = cfg.name  # its name in status and metrics (a down direction: pull.py)
        self.node = node
        self.socket = socket
        self.stop = stop
        self.target = target if target is not None else make_target(cfg, node)
        self.status = LinkStatus()
        self.thread = threading.Thread(target=self.run, name=f"link-{cfg.name}", daemon=True)
        self._budget = ReadBudget(cfg, stop)  # read sizes, shares and the bandwidth cap
        self._target_io = time.monotonic()  # the last answer from the target
        self._was_up = False  # this session reached "up"
        self._turn = 0  # rounds, for rotating the partitions' order
        self._admin: Admin | None = None  # the session's, for max_age's time lookups
        self._inflight = InFlight()  # an append sent while the next batches are read
        self._refused = Refused()  # partitions the target refuses for now, across sessions

    def matches(self, topic: str) -> bool:
        return self.cfg.rule_for(topic) is not None

    def _end_session(self) -> None:
        self.target.close()

    def _session(self) -> None:
        target, st = self.target, self.status
        with st.lock:
            st.partitions = {}  # every cursor is read again from the target, held ones retried
            st.read_bytes = 0
        self._inflight.clear()
        target.connect()
        self._target_io = time.monotonic()
        with BatchReader(self.socket) as reader, Admin(self.socket, transport="socket") as admin:
            self._admin = admin
            infos: dict[str, TopicInfo] = {}
            cursors: dict[tuple[str, int], int] = {}
            committed: dict[tuple[str, str, int], int] = {}  # mirrored this session
            next_refresh = next_groups = 0.0
            moved = True
            while not self.stop.is_set():
                now = time.monotonic()
                if now >= min(next_refresh, next_groups, self._target_io + self.cfg.heartbeat_s):
                    self._settle(cursors)  # the target answers the append in flight first
                if time.monotonic() >= next_refresh:
                    self._discover(reader, infos, cursors)
                    next_refresh = time.monotonic() + TOPIC_REFRESH_S
                if time.monotonic() >= next_groups:
                    self._sync_groups(admin, cursors, committed)
                    next_groups = time.monotonic() + GROUP_SYNC_S
                if time.monotonic() - self._target_io >= self.cfg.heartbeat_s:
                    self._heartbeat()  # raises on a half-open link: the session ends
                if st.state != "up":
                    log.info("link %s: up, %d partition(s) to %s", self.cfg.name, len(cursors),
                             target.name)
                    st.state, st.last_error = "up", ""
                    self._was_up = True
                # Past an append in flight: read while the target writes (inflight.py).
                live = {tp: self._inflight.position(tp, c) for tp, c in cursors.items()
                        if not st.partitions[tp].error}
                if not live:
                    self.stop.wait(self._idle_wait_ms() / 1000)
                    next_refresh = 0.0
                    continue
                moved = self._round(reader, infos, cursors, live, wait=not moved)
            self._settle(cursors)

    def _settle(self, cursors: dict[tuple[str, int], int],
                tp: tuple[str, int] | None = None) -> None:
        """Every shipment in flight answered first, or, with a target that ships partitions
        in parallel (NATS), only tp's (and the oldest when MAX_PARALLEL are in flight)."""
        inflight = self._inflight
        if not inflight.shipments:
            return
        if tp is not None and getattr(self.target, "parallel_partitions", False):
            if len(inflight.shipments) >= MAX_PARALLEL:
                inflight.settle(cursors, next(iter(inflight.shipments)))
            inflight.settle(cursors, tp)
        else:
            inflight.settle(cursors)
        self._target_io = inflight.answered_at

    def _round(self, reader: BatchReader, infos: dict[str, TopicInfo],
               cursors: dict[tuple[str, int], int], live: dict[tuple[str, int], int],
               wait: bool) -> bool:
        """Ship what there is, highest priority class first; True if anything moved. After an
        empty round (wait), one long poll over every partition instead: idle is idle. Only
        durable data is shipped (read_durable): a power cut on this node can take back what
        it had not fsynced, and a mirror must never hold what its source lost."""
        if wait:
            self._settle(cursors)  # nothing moved: no read ahead to overlap it with
        if wait and self.cfg.linger_ms:
            # Wakes when any partition has new data; its bytes are not shipped: batching by
            # time, what arrives meanwhile ships in the same append.
            woke = reader.read_many(live, 1, self._idle_wait_ms())
            if any(r.data for r in woke.values()):
                self.stop.wait(self.cfg.linger_ms / 1000)
        elif wait:
            # One long poll of durable data over every partition; what it brings ships at once,
            # higher classes first (the next rounds keep strict priority).
            budget = self._budget.read_bytes(len(live))
            order = sorted(live, key=self._budget.priority, reverse=True)
            reads = reader.read_durable({tp: live[tp] for tp in order}, budget,
                                        per_partition=self._budget.shares(order, budget),
                                        max_wait_ms=self._idle_wait_ms())
            return self._ship(infos, cursors, reads, order, live)
        self._turn += 1
        for cls in sorted({self._budget.priority(tp) for tp in live}, reverse=True):
            part = [tp for tp in live if self._budget.priority(tp) == cls]
            k = self._turn % len(part)  # rotated: a partition left out of a full read goes first
            part = part[k:] + part[:k]
            budget = self._budget.read_bytes(len(part))
            reads = reader.read_durable({tp: live[tp] for tp in part}, budget,
                                        per_partition=self._budget.shares(part, budget))
            if self._ship(infos, cursors, reads, part, live):
                return True  # strict priority: look at the higher classes again first
        return False

    def _idle_wait_ms(self) -> int:
        """An idle wait ends when the heartbeat is due: a long poll must not delay it."""
        due = self._target_io + self.cfg.heartbeat_s - time.monotonic()
        return max(1, min(IDLE_WAIT_MS, int(due * 1000)))

    def _heartbeat(self) -> None:
        """Raises on a half-open link: no answer within two intervals of the last one."""
        self._target_io = bounded_heartbeat(self.target.heartbeat, self._target_io,
                                            self.cfg.heartbeat_s)

    def _refuse(self, tp: tuple[str, int], e: TargetRefusedError) -> None:
        """The target refuses tp for now: shown in status (`held`, starting REFUSED), logged
        once, asked again on a backoff (refused.py); the other partitions ship meanwhile."""
        new, wait = self._refused.refuse(tp)
        text = Exception.__str__(e)
        with self.status.lock:
            self.status.partitions[tp] = PartitionState(
                -1, error=f"REFUSED by the target (asked again in {wait:.0f} s): {text}")
        if new:
            log.warning("link %s: %s-%d refused by the target, asked again on a backoff (the "
                        "others ship meanwhile): %s", self.cfg.name, tp[0], tp[1], text)

    def _hold(self, tp: tuple[str, int], ps: PartitionState, why: str) -> None:
        """Stop shipping this partition, loudly: never skip, never mix (docs/REPLICATION.md)."""
        ps.error = why
        log.error("link %s: %s-%d held: %s; until an operator acts (docs/REPLICATION.md)",
                  self.cfg.name, tp[0], tp[1], why)

    def _ship(self, infos: dict[str, TopicInfo], cursors: dict[tuple[str, int], int],
              reads: dict[tuple[str, int], PartitionRead], order: list[tuple[str, int]],
              asked: dict[tuple[str, int], int]) -> bool:
        st, moved = self.status, False
        with st.lock:
            st.read_bytes += sum(len(r.data) for r in reads.values())
        for tp in order:
            self._settle(cursors, tp)  # tp's shipment answered before tp ships again
            r = reads[tp]
            ps = st.partitions[tp]
            if asked[tp] != cursors[tp]:
                moved = True  # read past an append the target did not take whole: read again
                continue
            if r.incarnation != infos[tp[0]].incarnation:
                self._hold(tp, ps, f"the source topic was deleted and created again (incarnation "
                           f"{r.incarnation or 'none'}, the link ships {infos[tp[0]].incarnation})")
                continue
            if r.error is None:
                ps.source_end = r.log_end_offset
                if r.bytes_to_end >= 0:
                    ps.lag_bytes = r.bytes_to_end
                if not r.data and cursors[tp] >= r.log_end_offset:
                    ps.caught_up_at, ps.head_append_ms = time.time(), -1
            if r.error is not None:
                if not isinstance(r.error, OffsetOutOfRangeError):
                    raise r.error
                if cursors[tp] < r.log_start_offset and isinstance(self.target, GapTarget):
                    self._gap(tp, ps, cursors, r.incarnation, r.log_start_offset, GAP_RETENTION)
                    moved = True
                elif cursors[tp] < r.log_start_offset:
                    self._hold(tp, ps, f"gap: offsets {cursors[tp]} to {r.log_start_offset - 1} "
                               "were deleted by the source's retention before they were shipped")
                else:
                    self._hold(tp, ps, f"the source's log ends at {r.log_end_offset}, below the "
                               f"target's {cursors[tp]}: the source lost data its mirror holds")
                continue
            if not r.data:
                continue
            first_ms, last_ms = r.append_times_ms()
            ps.head_append_ms = first_ms  # the oldest record not shipped, until this ships
            # A target of records (Kafka) may hold part of a batch (a shipment cut short): it
            # says so (record_cursor) and skips the records below its cursor itself.
            inside = getattr(self.target, "record_cursor", False) and \
                r.first_offset < cursors[tp] < r.next_offset
            if r.first_offset != cursors[tp] and not inside:
                self._hold(tp, ps, f"the target's end {cursors[tp]} is inside the source batch "
                           f"at {r.first_offset}: not a mirror of this source")
                continue
            rule = self.cfg.rule_for(tp[0])
            if rule is not None and rule.max_age_ms is not None:
                fresh = self._expire(tp, ps, cursors, r, rule.max_age_ms)
                moved = moved or fresh is not r
                if ps.lag_bytes >= 0:  # the expired batches are behind the cursor now
                    ps.lag_bytes = max(0, ps.lag_bytes - len(r.data) +
                                       (len(fresh.data) if fresh is not None else 0))
                if fresh is None:
                    continue
                r = fresh
            self._budget.throttle(len(r.data))
            wire0 = getattr(self.target, "wire_bytes", None)
            begin = getattr(self.target, "ship_begin", None)
            if begin is not None:  # answered later, after the next read (inflight.py)
                finish = begin(tp[0], tp[1], r.incarnation, r)
                self._inflight.add(Shipment(tp, ps, cursors[tp], r.next_offset, len(r.data),
                                            finish))
                st.in_flight_max = max(st.in_flight_max, len(self._inflight.shipments))
            else:
                end, dups = self.target.ship(tp[0], tp[1], r.incarnation, r)
            if wire0 is not None and self.cfg.max_bytes_per_s is not None:
                # The cap is on the wire: what compression saved is given back to the bucket.
                saved = len(r.data) - (getattr(self.target, "wire_bytes", wire0) - wire0)
                self._budget.give_back(saved)
            moved = True
            if begin is not None:
                continue
            self._target_io = time.monotonic()
            ps.landed(cursors[tp], end, len(r.data), dups)
            cursors[tp] = end
            ps.landed_from_read(end, r.next_offset, last_ms)
            moved = True
        return moved

    def _gap(self, tp: tuple[str, int], ps: PartitionState, cursors: dict[tuple[str, int], int],
             incarnation: str, end: int, reason: int) -> None:
        """Offsets cursor..end-1 will never ship: the target records the gap, and the cursor
        moves past it. Counted (metric, status) and logged, never silent."""
        assert isinstance(self.target, GapTarget)
        start = cursors[tp]
        new_end = self.target.gap(tp[0], tp[1], incarnation, start, end, reason)
        self._target_io = time.monotonic()
        why = ("deleted by the source's retention before they were shipped"
               if reason == GAP_RETENTION else "older than max_age, not shipped")
        text = f"offsets {start}..{end - 1} ({end - start} records) {why}"
        with self.status.lock:
            g = self.status.gaps.setdefault(tp, GapCount())
            if reason == GAP_RETENTION:
                g.retention += end - start
            else:
                g.max_age += end - start
            g.last = text
        log.warning("link %s: %s-%d: gap recorded at %s: %s", self.cfg.name, tp[0], tp[1],
                    self.target.name, text)
        cursors[tp] = ps.cursor = new_end

    def _expire(self, tp: tuple[str, int], ps: PartitionState, cursors: dict[tuple[str, int], int],
                r: PartitionRead, max_age_ms: int) -> PartitionRead | None:
        """max_age: the read without its batches appended before now - max_age (those offsets
        become a gap record at the target), or None when nothing in it is young enough. Append
        times never decrease within a partition, so the old batches are a prefix."""
        cutoff = int(time.time() * 1000) - max_age_ms
        pos, end = r.split_at_time(cutoff)
        if pos == 0:
            return r  # the common case: one header looked at
        if not isinstance(self.target, GapTarget):
            self._hold(tp, ps, f"records past max_age at offset {cursors[tp]}, and target "
                       f"{self.target.name} cannot record a gap")
            return None
        data = r.data
        if pos >= len(data) and self._admin is not None:
            # Everything read is old: the source's time index says how far the old part goes,
            # so a long expired backlog is one gap, not one per read. Never past the durable
            # end: a gap over offsets the source could still lose would name the wrong records.
            tpo = TopicPartition(tp[0], tp[1])
            off = self._admin.list_offsets([tpo], cutoff)[tpo][0]
            first_young = off if off >= 0 else r.durable_end
            end = max(end, min(first_young, r.durable_end))
        self._gap(tp, ps, cursors, r.incarnation, end, GAP_MAX_AGE)
        if pos >= len(data):
            return None
        return dataclasses.replace(r, data=data[pos:], first_offset=end)

    def _sync_groups(self, admin: Admin, cursors: dict[tuple[str, int], int],
                     committed: dict[tuple[str, str, int], int]) -> None:
        """Mirror the committed offsets of every consumer group on replicated partitions. An
        offset beyond what the target holds is clamped to its cursor: after a failover the group
        resumes at the first record it has not seen among those that exist there."""
        for g in admin.list_groups():
            todo: dict[tuple[str, int], int] = {}
            for tp, co in admin.list_group_offsets(g.group_id).items():
                key = (tp.topic, tp.partition)
                if co.offset < 0 or key not in cursors:
                    continue
                off = min(co.offset, cursors[key])
                if committed.get((g.group_id, *key)) != off:
                    todo[key] = off
            if todo:
                self.target.commit_group_offsets(g.group_id, todo)
                for key, off in todo.items():
                    committed[(g.group_id, *key)] = off

    def _discover(self, reader: BatchReader, infos: dict[str, TopicInfo],
                  cursors: dict[tuple[str, int], int]) -> None:
        """New matching topics (and partitions) get a cursor, read from the target; so do
        refused ones whose backoff is over."""
        st = self.status
        with st.lock:
            for tp in self._refused.due():
                st.partitions.pop(tp, None)  # asked again below
        for topic in reader.topics():
            if not self.matches(topic):
                continue
            info = reader.describe(topic)
            old = infos.get(topic)
            if old is not None and old.incarnation != info.incarnation:
                raise IncarnationMismatchError(
                    f"source topic {topic!r} was deleted and created again while shipping")
            infos[topic] = info
            for p in range(info.partitions):
                if (topic, p) in st.partitions:
                    continue
                try:
                    c = self.target.cursor(topic, p, info)
                except (IncarnationMismatchError, NotAMirrorError) as e:  # this partition only
                    with st.lock:
                        st.partitions[(topic, p)] = PartitionState(-1, error=str(e))
                    log.error("link %s: %s", self.cfg.name, e)
                    continue
                except TargetRefusedError as e:  # this partition only, asked again later
                    self._refuse((topic, p), e)
                    continue
                if self._refused.clear((topic, p)):
                    log.info("link %s: %s-%d taken by the target again: shipping",
                             self.cfg.name, topic, p)
                cursors[(topic, p)] = c
                with st.lock:
                    st.partitions[(topic, p)] = PartitionState(c)
        with st.lock:
            self._refused.forget_except(set(st.partitions))  # a topic deleted: not asked again
