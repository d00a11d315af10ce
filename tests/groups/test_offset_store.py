"""The committed-offset store on real files: replay, tombstones, torn tails, and the cleaner's
growth bound (no supervisor; the LogManager is used directly)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgebus.log import LogManager
from edgebus.log.topic_config import TopicConfig
from edgebus.server.groups.offsets import OFFSETS_TOPIC, OffsetKey, OffsetStore, OffsetValue

pytestmark = pytest.mark.unit
SMALL = TopicConfig(partitions=1, retention_ms=-1, retention_bytes=-1, segment_bytes=2048)


def open_store(path: Path, config: TopicConfig = SMALL) -> tuple[LogManager, OffsetStore]:
    logs = LogManager(path)
    logs.open()
    store = OffsetStore(logs, config, min_dead_records=50)
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


def clean_fully(s: OffsetStore, now: int) -> None:
    for _ in range(100):
        if not s.needs_cleaning:
            return
        s.clean(now)
        sync(s)
    raise AssertionError("the cleaner did not finish")


def test_cleaner_bounds_the_log_and_keeps_every_live_offset(tmp_path: Path) -> None:
    logs, s = open_store(tmp_path)
    expect = {}
    for i in range(2000):  # far more than 2 KiB segments hold
        tp = ("t", i % 7)
        group = f"g{i % 3}"
        s.commit(group, [(tp[0], tp[1], i, f"meta{i}")], 1, i)
        expect.setdefault(group, {})[tp] = (i, f"meta{i}", 1)
        if i % 50 == 0:
            sync(s)
            s.clean(i)
    clean_fully(s, 2000)
    assert table(s) == expect
    p = s.partition
    assert s.cleaned_segments > 10
    live = s.live_entries
    assert p.log_end_offset - p.log_start_offset <= 2 * live + 50 + 40  # + a segment of slack
    assert p.size_bytes <= 4 * SMALL.segment_bytes
    logs.close()
    logs, s = open_store(tmp_path)
    assert table(s) == expect
    logs.close()


def test_cleaner_rests_when_the_live_entries_fill_segments(tmp_path: Path) -> None:
    logs, s = open_store(tmp_path)
    for i in range(400):  # 400 distinct live keys: several segments, nothing dead
        s.commit("g", [("t", i, 1, "")], 1, i)
    sync(s)
    assert s.partition.segment_count > 3
    assert not s.needs_cleaning and not s.clean(500)
    logs.close()


@pytest.mark.parametrize("synced", [False, True])
def test_crash_in_the_middle_of_cleaning(tmp_path: Path, synced: bool) -> None:
    logs, s = open_store(tmp_path)
    expect = {}
    for i in range(300):
        s.commit("g", [("t", i % 5, i, "")], 1, i)
        expect[("t", i % 5)] = (i, "", 1)
    sync(s)
    assert s.partition.segment_count > 1
    s.clean(300)  # copies live entries forward; the old segment stays until they are durable
    if synced:
        sync(s)
    s.clean(301)
    logs.abandon()
    logs, s = open_store(tmp_path)
    assert table(s) == {"g": expect}
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
