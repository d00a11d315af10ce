"""Committed offsets: an in-memory table backed by the internal topic `__consumer_offsets`.

Each commit appends one record per partition (key: group, topic, partition; value: offset,
commit time, generation, metadata; a null value deletes the key) through the ordinary log, so
recovery (torn-tail truncation, CRCs, the checkpoint) and group commit (the OffsetCommit answer
waits for the fsync that covers it) are the log's own. At start the log is replayed in order to
rebuild the table: the last record of a key wins. Layouts are in docs/FORMAT.md.

Growth bound: the topic is a compacted topic (cleanup_policy "compact") and the supervisor's
log cleaner (edgebus/log/cleaner.py, the same as for any compacted topic) keeps the latest record
of each key in its sealed segments, and drops a group's tombstones after delete_retention_ms. So
the topic holds about one record per live key plus the active segment, whatever the commit rate.

Invariant: every live entry's `log_offset` is the offset of the latest record of its key; a
crash at any point (of a commit or of a cleaning) replays to the same table or to an older durable
one, never to a mix that loses a durable commit (docs/FORMAT.md 4.8: a cleaned segment is swapped
in whole).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from edgebus import batch as B
from edgebus import format as F
from edgebus.errors import CorruptRecordError, ProtocolError, RecordTooLargeError
from edgebus.log.topic_config import TopicConfig
from edgebus.protocol.codec import I16, I32, I64, STR, Message
from edgebus.server.groups.topic import (  # noqa: F401 (their old import path)
    OFFSETS_SEGMENT_BYTES,
    OFFSETS_TOPIC,
    OFFSETS_TOPIC_CONFIG,
)

log = logging.getLogger("edgebus.groups.offsets")

# Records per appended batch: one commit of many partitions is split into batches this size.
MAX_RECORDS_PER_BATCH = 1000
# Bytes read per step while replaying.
REPLAY_READ_BYTES = 1024 * 1024
KEY_VERSION = 0
VALUE_VERSION = 0
# A value with the Kafka leader epoch the client committed with (OffsetCommit v6+): written only
# for a commit that has one (>= 0), so that an edgebus from before it still reads every other.
VALUE_VERSION_EPOCH = 1
NO_LEADER_EPOCH = -1

TP = tuple[str, int]


@dataclass
class OffsetKey(Message):
    version: int
    group_id: str
    topic: str
    partition: int
    FIELDS = (("version", I16), ("group_id", STR), ("topic", STR), ("partition", I32))


@dataclass
class OffsetValue(Message):
    version: int
    offset: int
    commit_time: int
    generation: int
    metadata: str
    FIELDS = (("version", I16), ("offset", I64), ("commit_time", I64), ("generation", I32),
              ("metadata", STR))


@dataclass
class OffsetValueEpoch(Message):
    """VALUE_VERSION_EPOCH: OffsetValue's fields, then the committed Kafka leader epoch."""

    version: int
    offset: int
    commit_time: int
    generation: int
    metadata: str
    leader_epoch: int
    FIELDS = (*OffsetValue.FIELDS, ("leader_epoch", I32))


@dataclass(slots=True)
class Committed:
    offset: int
    metadata: str
    commit_time: int  # ms since the epoch, the supervisor's clock
    generation: int
    log_offset: int  # offset of the record in __consumer_offsets that holds this value
    # The Kafka leader epoch of the record before `offset` as the client saw it (KIP-320;
    # server/kafka/leader_epochs.py), NO_LEADER_EPOCH when none was given (native commits).
    leader_epoch: int = NO_LEADER_EPOCH


class OffsetStore:
    """Loop-thread only. `logs` is the LogManager (or anything with its topic methods)."""

    def __init__(self, logs: Any, config: TopicConfig = OFFSETS_TOPIC_CONFIG) -> None:
        self.logs = logs
        self.config = config
        self.table: dict[str, dict[TP, Committed]] = {}
        self.live_entries = 0  # Invariant: the number of (group, partition) keys in table
        self.partition: Any = None
        self.bad_records = 0

    # --- start -----------------------------------------------------------------------------------
    def open(self) -> None:
        if OFFSETS_TOPIC not in self.logs.topics():
            self.logs.create_topic(OFFSETS_TOPIC, self.config, internal=True)
            log.info("created the internal topic %s", OFFSETS_TOPIC)
        elif not self.logs.topics()[OFFSETS_TOPIC].compacted:
            # Made by an older edgebus, whose private cleaner copied and deleted segments: from
            # now on the log cleaner compacts it like any compacted topic.
            old = self.logs.topics()[OFFSETS_TOPIC]
            self.logs.alter_topic_config(OFFSETS_TOPIC, replace(
                old, cleanup_policy=self.config.cleanup_policy,
                delete_retention_ms=self.config.delete_retention_ms))
            log.info("%s is now a compacted topic", OFFSETS_TOPIC)
        self.partition = self.logs.partition(OFFSETS_TOPIC, 0)
        self._replay()
        # Only where records a group had read can be gone: every partition after the machine
        # went down (or maybe did: no run marker said how the previous run stopped,
        # log/cleanstop.py), and a partition whose tail recovery cut (a torn or damaged last
        # batch) whatever ended the run; a kill -9 alone keeps the page cache. Otherwise a commit
        # past the log end is a client's own choice (Kafka clients may commit any offset) and
        # is kept as Kafka keeps it.
        if getattr(self.logs, "previous_stop", "clean") in ("machine-down", "unknown"):
            self._clamp_to_log_ends(time.time_ns() // 1_000_000)
        else:
            cut = {(p.topic, p.partition) for p in getattr(self.logs, "all_partitions", list)()
                   if getattr(getattr(p, "recovery_report", None), "anything_cut", False)}
            if cut:
                self._clamp_to_log_ends(time.time_ns() // 1_000_000, cut)

    def _clamp_to_log_ends(self, now_ms: int, only: set[TP] | None = None) -> None:
        """Move committed offsets past their partition's log end back to it.

        Such a commit means the log lost records the group had read: written but not yet fsynced
        when the power went (commits are durable, records need not be). Left as it is, the
        group would skip the records appended next, up to the old offset, or a consumer would
        take the offset as out of range and start over from `auto_offset_reset` (reading again
        what it had committed). At the log end, the group gets exactly the records appended from
        now on."""
        topics = self.logs.topics()
        moved: dict[TP, list[tuple[str, int]]] = {}
        for group_id, offsets in self.table.items():
            for (topic, part), c in offsets.items():
                cfg = topics.get(topic)
                if cfg is None or part >= cfg.partitions or (only is not None
                                                             and (topic, part) not in only):
                    continue
                end = self.logs.partition(topic, part).log_end_offset
                if c.offset > end:
                    moved.setdefault((topic, part), []).append((group_id, c.offset))
        by_group: dict[str, list[tuple[str, int, int, str]]] = {}
        for (topic, part), groups in sorted(moved.items()):
            end = self.logs.partition(topic, part).log_end_offset
            for group_id, _old in groups:
                c = self.table[group_id][(topic, part)]
                by_group.setdefault(group_id, []).append((topic, part, end, c.metadata))
            log.warning("%s-%d ends at offset %d, but group(s) %s had committed up to %d: records "
                        "they had read are gone (%s); "
                        "their committed offsets are moved back to %d, so that they get the "
                        "records appended from now on", topic, part, end,
                        ", ".join(g for g, _ in groups), max(o for _, o in groups),
                        "recovery cut the partition's tail" if only is not None
                        else "written but not fsynced before a power cut?", end)
        for group_id, entries in by_group.items():
            generation = max(self.table[group_id][(t, p)].generation for t, p, _, _ in entries)
            self.commit(group_id, entries, generation, now_ms)

    def _replay(self) -> None:
        p = self.partition
        pos = p.log_start_offset  # next offset to apply
        records = 0
        while pos < p.log_end_offset:
            before = pos
            try:
                data = p.read(pos, REPLAY_READ_BYTES)
            except CorruptRecordError as e:  # damaged on disk: skip it, keep every other commit
                self.bad_records += 1
                log.error("%s: skipping damaged offsets: %s", OFFSETS_TOPIC, e)
                pos = e.next_offset if e.next_offset is not None else pos + 1
                continue
            for b in B.iter_batches(data):
                base = F.BATCH_PREFIX.unpack_from(b, 0)[0]
                try:
                    info = B.validate_batch(b)
                    recs = B.decode_batch(b, OFFSETS_TOPIC, 0, pos)
                except (CorruptRecordError, RecordTooLargeError) as e:
                    self.bad_records += 1
                    log.error("%s: skipping a corrupt batch at offset %d: %s", OFFSETS_TOPIC,
                              base, e)
                    pos = max(pos, base + 1)
                    continue
                for r in recs:
                    self._apply(r.key, r.value, r.offset)
                records += len(recs)
                pos = max(pos, base + info.record_count)
            if pos == before:
                break
        log.info("loaded %d committed offset(s) of %d group(s) from %d record(s) of %s",
                 self.live_entries, len(self.table), records, OFFSETS_TOPIC)

    def _apply(self, key: bytes | None, value: bytes | None, log_offset: int) -> None:
        try:
            k = OffsetKey.from_bytes(key or b"")
            if k.version != KEY_VERSION:
                raise ProtocolError(f"unknown key version {k.version}")
            tp = (k.topic, k.partition)
            if value is None:
                self._set(k.group_id, tp, None)
                return
            version = int.from_bytes(value[:2], "little", signed=True)
            v: OffsetValue | OffsetValueEpoch
            if version == VALUE_VERSION:
                v = OffsetValue.from_bytes(value)
            elif version == VALUE_VERSION_EPOCH:
                v = OffsetValueEpoch.from_bytes(value)
            else:
                raise ProtocolError(f"unknown value version {version}")
        except ProtocolError as e:
            self.bad_records += 1
            log.error("%s: skipping record %d: %s", OFFSETS_TOPIC, log_offset, e)
            return
        self._set(k.group_id, tp, Committed(v.offset, v.metadata, v.commit_time, v.generation,
                                            log_offset, getattr(v, "leader_epoch",
                                                                NO_LEADER_EPOCH)))

    def _set(self, group_id: str, tp: TP, committed: Committed | None) -> None:
        """The one place the table changes (it keeps the live count)."""
        group = self.table.get(group_id)
        if committed is None:
            if group is not None and group.pop(tp, None) is not None:
                self.live_entries -= 1
                if not group:
                    del self.table[group_id]
            return
        if group is None:
            group = self.table[group_id] = {}
        if tp not in group:
            self.live_entries += 1
        group[tp] = committed

    # --- reads -----------------------------------------------------------------------------------
    def get(self, group_id: str, tp: TP) -> Committed | None:
        g = self.table.get(group_id)
        return g.get(tp) if g is not None else None

    def group_offsets(self, group_id: str) -> dict[TP, Committed]:
        return dict(self.table.get(group_id, {}))

    def groups(self) -> list[str]:
        return sorted(self.table)

    # --- writes ----------------------------------------------------------------------------------
    def commit(self, group_id: str, entries: Iterable[tuple[Any, ...]], generation: int,
               now_ms: int) -> Any:
        """Append (topic, partition, offset, metadata[, leader epoch]) entries; return the
        partition to wait on for durability. The table shows the new values at once."""
        items = []
        for topic, part, offset, metadata, *rest in entries:
            epoch = rest[0] if rest else NO_LEADER_EPOCH
            key = OffsetKey(KEY_VERSION, group_id, topic, part).to_bytes()
            # Epoch 0 (a partition never bumped: what every Kafka client commits until a cut)
            # tells a client nothing and is kept as version 0, which an edgebus from before
            # version 1 still reads: only a commit after a bump is unreadable to it.
            value = (OffsetValue(VALUE_VERSION, offset, now_ms, generation, metadata)
                     if epoch <= 0 else OffsetValueEpoch(VALUE_VERSION_EPOCH, offset, now_ms,
                                                        generation, metadata, epoch)).to_bytes()
            items.append(((topic, part), key, value, Committed(
                offset, metadata, now_ms, generation, -1, epoch if epoch > 0 else NO_LEADER_EPOCH)))
        self._append(group_id, items, now_ms)
        return self.partition

    def delete(self, keys: Iterable[tuple[str, TP]], now_ms: int) -> int:
        """Write tombstones for (group, (topic, partition)) keys that exist; return how many."""
        by_group: dict[str, list[Any]] = {}
        for group_id, tp in keys:
            if self.get(group_id, tp) is not None:
                key = OffsetKey(KEY_VERSION, group_id, tp[0], tp[1]).to_bytes()
                by_group.setdefault(group_id, []).append((tp, key, None, None))
        for group_id, items in by_group.items():
            self._append(group_id, items, now_ms)
        return sum(len(v) for v in by_group.values())

    def delete_topic(self, topic: str, now_ms: int) -> int:
        """Forget every group's offsets of a deleted topic (a new topic of that name starts
        over)."""
        keys = [(g, tp) for g, offs in self.table.items() for tp in offs if tp[0] == topic]
        return self.delete(keys, now_ms)

    def _append(self, group_id: str, items: list[Any], now_ms: int) -> None:
        """items: (tp, key bytes, value bytes or None, Committed or None for a tombstone)."""
        p = self.partition
        for start in range(0, len(items), MAX_RECORDS_PER_BATCH):
            chunk = items[start : start + MAX_RECORDS_PER_BATCH]
            recs = [B.encode_record(now_ms, key, value, []) for _tp, key, value, _c in chunk]
            buf = bytearray(B.build_batch(recs, now_ms, now_ms))
            info = B.validate_batch(buf, max_bytes=self.config.max_message_bytes)
            base, _ = p.append(buf, info, now_ms)
            for i, (tp, _key, _value, committed) in enumerate(chunk):
                if committed is not None:
                    committed.log_offset = base + i
                self._set(group_id, tp, committed)
