"""The committed-offset store on real files: replay, tombstones, torn tails, and the growth
bound the log cleaner gives it (no supervisor; the LogManager and edgebus/log/cleaner.py are
used directly)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgebus import batch as B
from edgebus import format as F
from edgebus.log import LogManager, cleaner
from edgebus.log.cleaner import CleanPlan, Throttle
from edgebus.log.topic_config import TopicConfig
from edgebus.server.groups.offsets import OFFSETS_TOPIC, OffsetKey, OffsetStore, OffsetValue

pytestmark = pytest.mark.unit
SMALL = TopicConfig(partitions=1, retention_ms=-1, retention_bytes=-1, segment_bytes=2048,
                    cleanup_policy="compact", delete_retention_ms=0)


def open_store(path: Path, config: TopicConfig = SMALL) -> tuple[LogManager, OffsetStore]:
    logs = LogManager(path)
    logs.open()
    store = OffsetStore(logs, config)
    store.open()
    return logs, store


def sync(store: OffsetStore) -> None:
    p = store.partition
    t = p.begin_sync()
    if t is not None:
        t.run()
        p.complete_sync(t)


def table(store: OffsetStore) -> dict:
    assert store.live_entries == sum(len(offs) for offs in store.table.values())
    return {g: {tp: (c.offset, c.metadata, c.generation) for tp, c in offs.items()}
            for g, offs in store.table.items()}


def test_replay_rebuilds_the_table(tmp_path: Path) -> None:
    logs, s = open_store(tmp_path)
    s.commit("g", [("t", 0, 5, "m0"), ("t", 1, 7, "")], 3, 1000)
    s.commit("g", [("t", 0, 9, "later")], 4, 2000)
    s.commit("h", [("u", 2, 1, "x" * 100)], -1, 3000)
    assert s.delete([("h", ("u", 2)), ("h", ("nope", 0))], 4000) == 1
    before = table(s)
    assert before == {"g": {("t", 0): (9, "later", 4), ("t", 1): (7, "", 3)}}
    assert s.get("g", ("t", 0)).commit_time == 2000
    logs.close()
    logs, s = open_store(tmp_path)
    assert table(s) == before and s.groups() == ["g"]
    assert OFFSETS_TOPIC in logs.topics()
    logs.close()


def test_deleted_topic_forgets_its_offsets(tmp_path: Path) -> None:
    logs, s = open_store(tmp_path)
    s.commit("g", [("t", 0, 5, ""), ("u", 0, 1, "")], 1, 1)
    s.commit("h", [("t", 3, 2, "")], 1, 1)
    assert s.delete_topic("t", 2) == 2
    assert table(s) == {"g": {("u", 0): (1, "", 1)}}
    logs.close()
    logs, s = open_store(tmp_path)
    assert table(s) == {"g": {("u", 0): (1, "", 1)}}
    logs.close()


def test_torn_tail_loses_only_the_torn_commit(tmp_path: Path) -> None:
    logs, s = open_store(tmp_path)
    for i in range(10):
        s.commit("g", [("t", 0, i, "")], 1, i)
    sync(s)
    logs.abandon()  # as kill -9
    seg = sorted((tmp_path / f"{OFFSETS_TOPIC}-0").glob("*.log"))[-1]
    size = seg.stat().st_size
    os.truncate(seg, size - 5)  # tear the last batch
    logs, s = open_store(tmp_path)
    assert s.get("g", ("t", 0)).offset == 8
    s.commit("g", [("t", 0, 10, "")], 1, 11)  # appends continue after the cut
    logs.close()
    logs, s = open_store(tmp_path)
    assert s.get("g", ("t", 0)).offset == 10
    logs.close()


def clean(s: OffsetStore, now: int, swap: bool = True) -> int:
    """One cleaning of the offsets partition, as the supervisor's cleaner runs it."""
    p = s.partition
    sync(s)
    plan = CleanPlan(p.topic, 0, tuple(p.compaction_view()), now, p.config.delete_retention_ms,
                     p.config.min_compaction_lag_ms)
    res = cleaner.clean(plan, Throttle(1 << 40))
    if not swap:
        return len(res.segments)
    return sum(p.replace_segment(c.base_offset, c.cleaned_path, c.source_size)
               for c in res.segments)


def records_in_log(s: OffsetStore) -> int:
    p = s.partition
    n, pos = 0, p.log_start_offset
    while pos < p.log_end_offset:
        for b in B.iter_batches(p.read(pos, 1 << 20)):
            n += len(B.decode_batch(b, p.topic, 0, pos))
            base, _l, count = F.BATCH_SCAN.unpack_from(b, 0)
            pos = base + count
    return n


def test_cleaner_bounds_the_log_and_keeps_every_live_offset(tmp_path: Path) -> None:
    logs, s = open_store(tmp_path)
    expect = {}
    rewritten = 0
    for i in range(2000):  # far more than 2 KiB segments hold
        tp = ("t", i % 7)
        group = f"g{i % 3}"
        s.commit(group, [(tp[0], tp[1], i, f"meta{i}")], 1, i)
        expect.setdefault(group, {})[tp] = (i, f"meta{i}", 1)
        if i % 50 == 0:
            rewritten += clean(s, i)
    rewritten += clean(s, 2000)
    assert table(s) == expect
    assert rewritten > 10
    # Sealed segments hold one record per live key at most; the active one what came since.
    p = s.partition
    active_records = p.log_end_offset - p.segment_bases[-1]
    assert records_in_log(s) <= s.live_entries + active_records
    logs.close()
    logs, s = open_store(tmp_path)
    assert table(s) == expect
    logs.close()


def test_nothing_is_rewritten_when_every_record_is_live(tmp_path: Path) -> None:
    logs, s = open_store(tmp_path)
    for i in range(400):  # 400 distinct live keys: several segments, nothing dead
        s.commit("g", [("t", i, 1, "")], 1, i)
    sync(s)
    assert s.partition.segment_count > 3
    assert clean(s, 500) == 0
    logs.close()


@pytest.mark.parametrize("swapped", [False, True])
def test_crash_in_the_middle_of_cleaning(tmp_path: Path, swapped: bool) -> None:
    logs, s = open_store(tmp_path)
    expect = {}
    for i in range(300):
        s.commit("g", [("t", i % 5, i, "")], 1, i)
        expect[("t", i % 5)] = (i, "", 1)
    assert clean(s, 300, swap=swapped) > 0  # unswapped: the cleaned files are left as .tmp
    logs.abandon()
    logs, s = open_store(tmp_path)
    assert table(s) == {"g": expect}
    assert not list(tmp_path.rglob("*.tmp"))
    logs.close()


def test_an_offsets_topic_made_by_an_older_edgebus_becomes_compacted(tmp_path: Path) -> None:
    old = TopicConfig(partitions=1, retention_ms=-1, retention_bytes=-1, segment_bytes=2048)
    logs, s = open_store(tmp_path, old)
    s.commit("g", [("t", 0, 5, "")], 1, 1)
    logs.close()
    logs, s = open_store(tmp_path)
    assert logs.topics()[OFFSETS_TOPIC].compacted
    assert table(s) == {"g": {("t", 0): (5, "", 1)}}
    logs.close()


def test_replay_skips_undecodable_records(tmp_path: Path) -> None:
    from edgebus import batch as B

    logs, s = open_store(tmp_path)
    s.commit("g", [("t", 0, 1, "")], 1, 1)
    buf = bytearray(B.build_batch([B.encode_record(1, b"junk", b"junk", [])], 1, 1))
    s.partition.append(buf, B.validate_batch(buf), 2)
    s.commit("g", [("t", 1, 2, "")], 1, 3)
    logs.close()
    logs, s = open_store(tmp_path)
    assert table(s) == {"g": {("t", 0): (1, "", 1), ("t", 1): (2, "", 1)}}
    assert s.bad_records == 1
    logs.close()


def test_replay_skips_a_batch_with_a_damaged_stored_offset(tmp_path: Path) -> None:
    """A flipped byte in the base offset of a sealed commit batch (not rescanned at start) is a
    CorruptRecordError on read: replay skips those offsets and keeps every other commit."""
    from edgebus import format as F

    logs, s = open_store(tmp_path)
    for i in range(3):
        s.commit("g", [("t", i, 10 + i, "")], 1, i)
    logs.close()
    seg = sorted((tmp_path / f"{OFFSETS_TOPIC}-0").glob("*.log"))[0]
    data = bytearray(seg.read_bytes())
    second = F.U32.unpack_from(data, F.BATCH_LENGTH)[0]  # the second commit's batch
    data[second + F.BATCH_BASE_OFFSET + 1] ^= 0x40
    seg.write_bytes(data)
    logs, s = open_store(tmp_path)
    assert table(s) == {"g": {("t", 0): (10, "", 1), ("t", 2): (12, "", 1)}}
    assert s.bad_records == 1
    logs.close()


@pytest.mark.parametrize("cls", [OffsetKey, OffsetValue], ids=lambda c: c.__name__)
def test_record_layouts_match_docs_format(cls) -> None:
    from tests.test_format_doc import table, wire_name

    cols, rows = table(f"`{cls.__name__}`")
    assert cols == ["field", "type", "meaning"]
    assert [(r["field"], r["type"]) for r in rows] == [(n, wire_name(t)) for n, t in cls.FIELDS]
