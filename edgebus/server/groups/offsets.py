"""Committed offsets: an in-memory table backed by the internal topic `__consumer_offsets`.

Each commit appends one record per partition (key: group, topic, partition; value: offset,
commit time, generation, metadata; a null value deletes the key) through the ordinary log, so
recovery (torn-tail truncation, CRCs, the checkpoint) and group commit (the OffsetCommit answer
waits for the fsync that covers it) are the log's own. At start the log is replayed in order to
rebuild the table: the last record of a key wins. Layouts are in docs/FORMAT.md.

Growth bound (a copying cleaner, Kafka's log compaction in its simplest form): when more than
half of the topic's records are dead (superseded or deleted) and at least CLEAN_MIN_DEAD_RECORDS
are, the live entries whose records sit in segments older than the active one are appended again
at the head, and once the log is fsynced past those copies (and past every record that superseded
the rest) the older segments are deleted. So the topic holds at most about 2 x live + CLEAN_MIN_DEAD_RECORDS records
plus one segment (OFFSETS_SEGMENT_BYTES; only whole segments are deleted), whatever the commit
rate; the copying per commit is bounded (at most `live` records copied to free more than `live`);
and the cleaner rests, rather than churns, when the live entries alone fill several segments.

Invariant: every live entry's `log_offset` is the offset of the latest record of its key, and a
segment is deleted only when no live entry points into it and everything after it that the
deletion depends on is fsynced; a crash at any point replays to the same table or to an older
durable one, never to a mix that loses a durable commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgebus import batch as B
from edgebus import format as F
from edgebus.errors import CorruptRecordError, ProtocolError, RecordTooLargeError
from edgebus.log.topic_config import TopicConfig
from edgebus.protocol.codec import I16, I32, I64, STR, Message

log = logging.getLogger("edgebus.groups.offsets")

OFFSETS_TOPIC = "__consumer_offsets"
# Small segments so that the cleaner works in small steps (it copies at most one segment's live
# entries at a time); never expired by time or size (only the cleaner deletes).
OFFSETS_SEGMENT_BYTES = 4 * 1024 * 1024
OFFSETS_TOPIC_CONFIG = TopicConfig(partitions=1, retention_ms=-1, retention_bytes=-1,
                                   segment_bytes=OFFSETS_SEGMENT_BYTES,
                                   max_message_bytes=1024 * 1024)
# Records per appended batch: one commit of many partitions is split into batches this size.
MAX_RECORDS_PER_BATCH = 1000
# The cleaner does not run for fewer dead records than this (about 1.3 MB): cleaning small logs
# costs more writes than it saves space, and SD cards wear.
CLEAN_MIN_DEAD_RECORDS = 10_000
# Bytes read per step while replaying.
REPLAY_READ_BYTES = 1024 * 1024
KEY_VERSION = 0
VALUE_VERSION = 0

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


@dataclass(slots=True)
class Committed:
    offset: int
    metadata: str
    commit_time: int  # ms since the epoch, the supervisor's clock
    generation: int
    log_offset: int  # offset of the record in __consumer_offsets that holds this value


class OffsetStore:
    """Loop-thread only. `logs` is the LogManager (or anything with its topic methods)."""

    def __init__(self, logs: Any, config: TopicConfig = OFFSETS_TOPIC_CONFIG,
                 min_dead_records: int = CLEAN_MIN_DEAD_RECORDS) -> None:
        self.logs = logs
        self.config = config
        self.min_dead_records = min_dead_records
        self.table: dict[str, dict[TP, Committed]] = {}
        self.live_entries = 0  # Invariant: the number of (group, partition) keys in table
        self.partition: Any = None
        # (delete the segments below this offset, once the log is fsynced up to this one)
        self._pending_delete: tuple[int, int] | None = None
        self.cleaned_segments = 0
        self.bad_records = 0

    # --- start -----------------------------------------------------------------------------------
    def open(self) -> None:
        if OFFSETS_TOPIC not in self.logs.topics():
            self.logs.create_topic(OFFSETS_TOPIC, self.config, internal=True)
            log.info("created the internal topic %s", OFFSETS_TOPIC)
        self.partition = self.logs.partition(OFFSETS_TOPIC, 0)
        self._replay()

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
            v = OffsetValue.from_bytes(value)
            if v.version != VALUE_VERSION:
                raise ProtocolError(f"unknown value version {v.version}")
        except ProtocolError as e:
            self.bad_records += 1
            log.error("%s: skipping record %d: %s", OFFSETS_TOPIC, log_offset, e)
            return
        self._set(k.group_id, tp, Committed(v.offset, v.metadata, v.commit_time, v.generation,
                                            log_offset))

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
    def commit(self, group_id: str, entries: Iterable[tuple[str, int, int, str]], generation: int,
               now_ms: int) -> Any:
        """Append (topic, partition, offset, metadata) entries; return the partition to wait on
        for durability. The table shows the new values at once."""
        items = []
        for topic, part, offset, metadata in entries:
            key = OffsetKey(KEY_VERSION, group_id, topic, part).to_bytes()
            value = OffsetValue(VALUE_VERSION, offset, now_ms, generation, metadata).to_bytes()
            items.append(((topic, part), key, value, Committed(offset, metadata, now_ms,
                                                               generation, -1)))
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

    # --- cleaning --------------------------------------------------------------------------------
    @property
    def needs_cleaning(self) -> bool:
        p = self.partition
        return p is not None and not p.offline and (
            self._pending_delete is not None or self._worth_cleaning())

    def _worth_cleaning(self) -> bool:
        p = self.partition
        if p.segment_count <= 1:
            return False
        live = self.live_entries
        dead = p.log_end_offset - p.log_start_offset - live
        return bool(dead > max(live, self.min_dead_records))

    def clean(self, now_ms: int) -> bool:
        """One step of the cleaner; True when it appended copies (the caller then arranges an
        fsync, as for any append).

        Step 1 copies every live entry that is not in the active segment to the head and notes
        the active segment's base as the boundary; step 2, once the log is fsynced up to the end
        of step 1, deletes every segment below the boundary. Copying at most the live entries to
        free more dead records than that keeps the work per commit bounded.
        """
        p = self.partition
        if p is None or p.offline:
            return False
        if self._pending_delete is not None:
            boundary, need_synced = self._pending_delete
            if p.synced_offset < need_synced:
                return False
            self._pending_delete = None
            if self._live_below(boundary):  # cannot happen: copies and commits go to the head
                log.error("%s: live entries below offset %d; not cleaning", OFFSETS_TOPIC,
                          boundary)
                return False
            deleted = 0
            while p.segment_count > 1 and p.log_start_offset < boundary:
                p.delete_oldest_segment()
                deleted += 1
            self.cleaned_segments += deleted
            log.info("%s: cleaned %d segment(s); log now %d..%d, %d live entries",
                     OFFSETS_TOPIC, deleted, p.log_start_offset, p.log_end_offset,
                     self.live_entries)
            return False
        if not self._worth_cleaning():
            return False
        boundary = p.segment_bases[-1]
        copied = 0
        for group_id in list(self.table):
            items = []
            for tp, c in self.table[group_id].items():
                if c.log_offset < boundary:
                    key = OffsetKey(KEY_VERSION, group_id, tp[0], tp[1]).to_bytes()
                    value = OffsetValue(VALUE_VERSION, c.offset, c.commit_time, c.generation,
                                        c.metadata).to_bytes()
                    items.append((tp, key, value, Committed(c.offset, c.metadata, c.commit_time,
                                                            c.generation, -1)))
            if items:
                self._append(group_id, items, now_ms)
                copied += len(items)
        # Delete only once the copies, and every record that superseded the old segments' other
        # entries, are durable: everything up to the current end.
        self._pending_delete = (boundary, p.log_end_offset)
        return copied > 0

    def _live_below(self, boundary: int) -> bool:
        return any(c.log_offset < boundary for g in self.table.values() for c in g.values())
