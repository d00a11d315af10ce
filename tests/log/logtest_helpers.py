"""Helpers shared by the storage tests: build batches, append them, read them back."""

from __future__ import annotations

from pathlib import Path

from edgebus.batch import build_batch, decode_batch, encode_record, iter_batches, validate_batch
from edgebus.errors import CorruptRecordError
from edgebus.log import Partition, RecoveryPoint, TopicConfig


def make_batch(values: list[bytes], ts: int = 1_000) -> bytearray:
    recs = [encode_record(ts, None, v, []) for v in values]
    return bytearray(build_batch(recs, ts, ts))


def append(p: Partition, values: list[bytes], now_ms: int = 1_000) -> tuple[int, int]:
    b = make_batch(values, now_ms)
    return p.append(b, validate_batch(b), now_ms)


def sync(p: Partition) -> RecoveryPoint:
    """One whole sync round, as the supervisor's group commit runs it; the recovery point after."""
    t = p.begin_sync()
    if t is not None:
        t.run()
        p.complete_sync(t)
    return p.recovery_point()


def values_of(n: int, size: int = 10, start: int = 0) -> list[bytes]:
    return [f"v{start + i:06d}".encode().ljust(size, b".") for i in range(n)]


def records(data: bytes, topic: str = "t", partition: int = 0, min_offset: int = 0) -> list:
    out = []
    for b in iter_batches(data):
        out.extend(decode_batch(b, topic, partition, min_offset))
    return out


def read_all(p: Partition, start: int | None = None, max_bytes: int = 1 << 20) -> list[tuple]:
    """(offset, value) of every record from `start` (default: log start) to the end."""
    off = p.log_start_offset if start is None else start
    out = []
    while off < p.log_end_offset:
        data = p.read(off, max_bytes)
        assert data, f"empty read at {off} below log end {p.log_end_offset}"
        recs = records(data, p.topic, p.partition, off)
        assert recs and recs[0].offset == off
        out.extend((r.offset, r.value) for r in recs)
        off = recs[-1].offset + 1
    return out


def read_survivors(
    p: Partition, max_bytes: int = 1 << 20
) -> tuple[list[tuple[int, bytes]], list[tuple[int, int]]]:
    """(offset, value) of every readable record from the log start, and the [start, end) ranges
    that reads refuse as damaged (a reader skipping each CorruptRecordError to its next_offset).
    Checks that every refusal names the offset asked for and that no record is out of place."""
    off = p.log_start_offset
    out: list[tuple[int, bytes]] = []
    refused: list[tuple[int, int]] = []
    while off < p.log_end_offset:
        try:
            data = p.read(off, max_bytes)
        except CorruptRecordError as e:
            assert e.offset == off and e.next_offset is not None and e.next_offset > off
            assert (e.topic, e.partition) == (p.topic, p.partition) and str(off) in str(e)
            if refused and refused[-1][1] == off:
                refused[-1] = (refused[-1][0], e.next_offset)
            else:
                refused.append((off, e.next_offset))
            off = e.next_offset
            continue
        assert data, f"empty read at {off} below log end {p.log_end_offset}"
        recs = records(data, p.topic, p.partition, off)
        assert recs and recs[0].offset == off
        assert [r.offset for r in recs] == list(range(off, off + len(recs))), "out of sequence"
        out.extend((r.offset, r.value) for r in recs)
        off = recs[-1].offset + 1
    return out, refused


def open_partition(
    path: Path, config: TopicConfig | None = None, rp: RecoveryPoint | None = None
) -> Partition:
    return Partition.open(path, "t", 0, config or TopicConfig(), rp)


def log_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.log"))


def fold(recs: list[tuple[int, bytes, bytes | None]]) -> dict[bytes, bytes]:
    """(offset, key, value) records folded by key as compaction keeps them: the latest value of
    each key, a None value (a tombstone) deleting it."""
    state: dict[bytes, bytes] = {}
    for _o, k, v in recs:
        if v is None:
            state.pop(k, None)
        else:
            state[k] = v
    return state
