"""DeleteRecords' durable log start (edgebus/log/log_start.py) and growing a topic's partition
count (LogManager.add_partitions), on real files: restart, crash (abandon), retention after."""

from __future__ import annotations

from pathlib import Path

import pytest
from logtest_helpers import append, open_partition, read_all, values_of

from edgebus.errors import InvalidRequestError, OffsetOutOfRangeError
from edgebus.log import TopicConfig
from edgebus.log.log_start import LOG_START_FILE
from edgebus.log.manager import LogManager

pytestmark = pytest.mark.unit


def fill(p, batches: int) -> None:  # type: ignore[no-untyped-def]
    for i in range(batches):
        append(p, values_of(3, 20, i * 3), 1_000 + i)


def test_delete_records_moves_the_start_inside_a_batch_and_survives_a_crash(
        tmp_path: Path) -> None:
    cfg = TopicConfig(segment_bytes=300)
    p = open_partition(tmp_path / "t-0", cfg)
    fill(p, 12)  # 36 records, 3 per batch, about 2 batches per segment
    segs = p.segment_count
    assert p.delete_records(20) == 20
    assert p.log_start_offset == 20
    assert p.segment_count < segs, "segments wholly below the new start are deleted"
    with pytest.raises(OffsetOutOfRangeError):
        p.read(19, 1 << 20)
    assert [o for o, _ in read_all(p)] == list(range(20, 36))
    assert (tmp_path / "t-0" / LOG_START_FILE).read_text() == "20\n"
    p.abandon()  # kill -9: nothing more is fsynced or closed
    p = open_partition(tmp_path / "t-0", cfg)
    assert p.log_start_offset == 20, "the start is durable before delete_records returns"
    assert [o for o, _ in read_all(p)] == list(range(20, 36))
    assert p.offset_for_timestamp(0) == (20, 1_000 + 6), "never below the log start"
    append(p, [b"next"], 5_000)
    assert p.log_end_offset == 37


def test_delete_records_bounds(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", TopicConfig())
    fill(p, 2)
    with pytest.raises(OffsetOutOfRangeError, match="log ends at 6"):
        p.delete_records(7)
    assert p.delete_records(4) == 4
    assert p.delete_records(2) == 4, "the start never moves back"
    assert p.delete_records(6) == 6, "up to the log end: nothing readable is left"
    assert p.read(6, 1 << 20) == b""


def test_retention_after_delete_records_keeps_the_higher_start(tmp_path: Path) -> None:
    cfg = TopicConfig(segment_bytes=300, retention_bytes=0)
    p = open_partition(tmp_path / "t-0", cfg)
    fill(p, 4)
    p.delete_records(1)
    p.apply_retention(now_ms=2_000)
    assert p.log_start_offset >= 1
    assert p.log_start_offset == p.log_end_offset - len(read_all(p))


def test_damaged_log_start_file_is_ignored_not_fatal(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", TopicConfig())
    fill(p, 2)
    p.delete_records(4)
    p.close()
    (tmp_path / "t-0" / LOG_START_FILE).write_text("garbage\n")
    p = open_partition(tmp_path / "t-0", TopicConfig())
    assert p.log_start_offset == 0, "without the floor only whole segments bound the start"
    assert len(read_all(p)) == 6


def test_add_partitions_persists_and_only_grows(tmp_path: Path) -> None:
    m = LogManager(tmp_path)
    m.open()
    m.create_topic("t", TopicConfig(partitions=2))
    append(m.partition("t", 0), [b"a"])
    with pytest.raises(InvalidRequestError, match="can only grow"):
        m.add_partitions("t", 2)
    assert m.add_partitions("t", 5).partitions == 5
    append(m.partition("t", 4), [b"e"])
    m.close()
    m = LogManager(tmp_path)
    m.open()
    assert m.topics()["t"].partitions == 5
    assert [p.log_end_offset for p in m.partitions("t")] == [1, 0, 0, 0, 1]
    m.close()


def test_directories_of_an_interrupted_add_partitions_are_removed(tmp_path: Path) -> None:
    m = LogManager(tmp_path)
    m.open()
    m.create_topic("t", TopicConfig(partitions=1))
    m.close()
    # What a crash between making the directories and writing topics.json leaves.
    p = open_partition(tmp_path / "t-1", TopicConfig())
    append(p, [b"orphan"])
    p.close()
    m = LogManager(tmp_path)
    m.open()
    assert m.topics()["t"].partitions == 1
    assert not (tmp_path / "t-1").exists()
    assert m.add_partitions("t", 2).partitions == 2
    assert m.partition("t", 1).log_end_offset == 0, "a new partition never inherits an orphan"
    m.close()
