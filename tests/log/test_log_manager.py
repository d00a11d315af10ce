"""LogManager: lock, topics.json, checkpoint, topic create/delete, leftovers."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import stat
from pathlib import Path

import pytest
from logtest_helpers import append, read_all, values_of

from edgebus.errors import (
    ClosedError,
    DataDirLockedError,
    InvalidTopicError,
    StorageError,
    TopicExistsError,
    UnknownPartitionError,
    UnknownTopicError,
)
from edgebus.log import LogManager, TopicConfig
from edgebus.log.checkpoint import CHECKPOINT_FILE, decode_checkpoint

pytestmark = pytest.mark.unit

CFG = TopicConfig(partitions=2, segment_bytes=1000, index_interval_bytes=100)


def fill(m: LogManager, topic: str, batches: int) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for p in m.partitions(topic):
        vals = out.setdefault(p.partition, [])
        for i in range(batches):
            v = values_of(3, 20, i * 3 + 1000 * p.partition)
            append(p, v, 1_000 + i)
            vals.extend(v)
    return out


def contents(m: LogManager, topic: str) -> dict[int, list[bytes]]:
    return {p.partition: [v for _, v in read_all(p)] for p in m.partitions(topic)}


def open_with_t(data_dir: Path) -> LogManager:
    """A LogManager opened on `data_dir` with topic "t" (CFG) created."""
    m = LogManager(data_dir)
    m.open()
    m.create_topic("t", CFG)
    return m


def test_create_write_close_reopen(tmp_path: Path) -> None:
    m = LogManager(tmp_path / "data")
    m.open()
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o750
    m.create_topic("orders", CFG)
    made = m.topics()["orders"]
    assert re.fullmatch(r"[0-9a-f]{32}", made.incarnation)  # each topic gets its identity
    assert m.topics() == {"orders": dataclasses.replace(CFG, incarnation=made.incarnation)}
    assert sorted(d.name for d in (tmp_path / "data").iterdir() if d.is_dir()) == [
        "orders-0", "orders-1",
    ]
    vals = fill(m, "orders", 20)
    m.close()
    doc = json.loads((tmp_path / "data" / "topics.json").read_text())
    assert doc["topics"]["orders"]["partitions"] == "2"
    points = decode_checkpoint((tmp_path / "data" / CHECKPOINT_FILE).read_bytes())
    assert {k: v.next_offset for k, v in points.items()} == {("orders", 0): 60, ("orders", 1): 60}

    m = LogManager(tmp_path / "data")
    m.open()
    assert m.topics() == {"orders": made}  # its incarnation survives the reopen
    for p in m.all_partitions():
        assert p.recovery_report is not None and p.recovery_report.scanned_bytes == 0
    assert contents(m, "orders") == vals
    m.close()


def test_second_manager_is_refused_with_the_pid(tmp_path: Path) -> None:
    m = LogManager(tmp_path / "data")
    m.open()
    other = LogManager(tmp_path / "data")
    with pytest.raises(DataDirLockedError) as info:
        other.open()
    msg = str(info.value)
    assert str(tmp_path / "data") in msg and f"process {os.getpid()}" in msg
    assert "another edgebus supervisor" in msg  # the hint
    m.close()
    other.open()  # released by close
    other.close()


def test_lookup_errors(tmp_path: Path) -> None:
    m = open_with_t(tmp_path)
    with pytest.raises(UnknownTopicError, match="'nope'"):
        m.partition("nope", 0)
    with pytest.raises(UnknownPartitionError, match=r"partitions 0\.\.1; there is no partition 2"):
        m.partition("t", 2)
    with pytest.raises(UnknownPartitionError):
        m.partition("t", -1)
    with pytest.raises(UnknownTopicError):
        m.partitions("nope")
    with pytest.raises(TopicExistsError):
        m.create_topic("t", CFG)
    with pytest.raises(InvalidTopicError):
        m.create_topic("bad/name", CFG)
    with pytest.raises(InvalidTopicError):
        m.create_topic("__internal", CFG)
    m.create_topic("__internal", TopicConfig(), internal=True)
    with pytest.raises(UnknownTopicError):
        m.delete_topic("nope")
    m.close()
    with pytest.raises(ClosedError):
        m.create_topic("x", CFG)


def test_delete_topic_and_recreate_starts_empty(tmp_path: Path) -> None:
    m = open_with_t(tmp_path)
    m.create_topic("keep", TopicConfig())
    fill(m, "t", 10)
    m.delete_topic("t")
    assert set(m.topics()) == {"keep"}
    assert not (tmp_path / "t-0").exists() and not list(tmp_path.glob("*.deleted"))
    m.create_topic("t", CFG)
    assert [p.log_end_offset for p in m.partitions("t")] == [0, 0]
    m.close()


def test_crash_mid_delete_leaves_nothing_alive(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    m = open_with_t(tmp_path)
    fill(m, "t", 10)
    m.close()
    # A crash after topics.json was updated: one directory renamed, one not renamed yet.
    (tmp_path / "topics.json").write_text(json.dumps({"version": 1, "topics": {}}))
    os.rename(tmp_path / "t-0", tmp_path / "t-0.123.deleted")
    with caplog.at_level(logging.INFO, logger="edgebus.log"):
        m.open()
    assert m.topics() == {}
    assert sorted(x.name for x in tmp_path.iterdir()) == [".lock", "recovery-checkpoint",
                                                          "running", "topics.json"]
    assert "interrupted delete" in caplog.text
    m.create_topic("t", CFG)
    assert [p.log_end_offset for p in m.partitions("t")] == [0, 0]
    m.close()


def test_missing_topics_json_with_data_is_refused(tmp_path: Path) -> None:
    m = open_with_t(tmp_path)
    m.close()
    (tmp_path / "topics.json").unlink()
    with pytest.raises(StorageError, match=r"topics\.json is missing"):
        LogManager(tmp_path).open()
    assert (tmp_path / "t-0").is_dir(), "data is never deleted on a guess"
    # The lock was released on the failure.
    (tmp_path / "topics.json").write_text('{"version": 1, "topics": {"t": {"partitions": "2"}}}')
    m = LogManager(tmp_path)
    m.open()
    m.close()


def test_damaged_topics_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "topics.json").write_text('{"version": 1, "topics": {"t": {"partitions": "x"}}}')
    with pytest.raises(StorageError, match=r"damaged.*partitions"):
        LogManager(tmp_path).open()


def test_torn_checkpoint_means_full_scan(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    m = open_with_t(tmp_path)
    vals = fill(m, "t", 20)
    m.write_checkpoint()
    more = fill(m, "t", 5)
    m.abandon()
    ck = tmp_path / CHECKPOINT_FILE
    ck.write_bytes(ck.read_bytes()[:-7])
    m = LogManager(tmp_path)
    with caplog.at_level(logging.WARNING, logger="edgebus.log"):
        m.open()
    assert "ignoring recovery checkpoint" in caplog.text
    for p in m.all_partitions():
        assert p.recovery_report is not None and p.recovery_report.full_scan
    assert contents(m, "t") == {k: vals[k] + more[k] for k in vals}
    m.close()


def test_unclean_stop_scans_only_past_the_checkpoint(tmp_path: Path) -> None:
    m = open_with_t(tmp_path)
    fill(m, "t", 30)
    for p in m.all_partitions():
        t = p.begin_sync()
        assert t is not None
        t.run()
        p.complete_sync(t)
    m.write_checkpoint()
    synced_size = {p.partition: p.size_bytes for p in m.all_partitions()}
    fill(m, "t", 3)
    unsynced = {p.partition: p.size_bytes - synced_size[p.partition] for p in m.all_partitions()}
    m.abandon()
    m = LogManager(tmp_path)
    m.open()
    for p in m.all_partitions():
        assert p.recovery_report is not None
        assert p.recovery_report.scanned_bytes == unsynced[p.partition]
        assert p.log_end_offset == 99
    m.close()


def test_checkpoint_is_not_rewritten_when_unchanged(tmp_path: Path) -> None:
    m = open_with_t(tmp_path)
    m.write_checkpoint()
    ck = tmp_path / CHECKPOINT_FILE
    before = ck.stat().st_mtime_ns, ck.stat().st_ino
    m.write_checkpoint()
    assert (ck.stat().st_mtime_ns, ck.stat().st_ino) == before
    m.close()


def test_manager_retention(tmp_path: Path) -> None:
    m = LogManager(tmp_path)
    m.open()
    m.create_topic("t", TopicConfig(partitions=2, segment_bytes=500, retention_ms=1000))
    fill(m, "t", 10)
    assert m.apply_retention(now_ms=10**9) >= 2
    assert all(p.log_start_offset == p.log_end_offset == 30 for p in m.all_partitions())
    m.close()
    m.open()
    assert all(p.log_start_offset == p.log_end_offset == 30 for p in m.all_partitions())
    m.close()


def test_stale_checkpoint_entry_cannot_hurt_a_recreated_topic(tmp_path: Path) -> None:
    m = open_with_t(tmp_path)
    fill(m, "t", 40)
    m.close()
    # A crash in delete_topic after topics.json was written: the checkpoint still has "t".
    (tmp_path / "topics.json").write_text('{"version": 1, "topics": {}}')
    assert ("t", 0) in decode_checkpoint((tmp_path / CHECKPOINT_FILE).read_bytes())
    m = LogManager(tmp_path)
    m.open()
    assert decode_checkpoint((tmp_path / CHECKPOINT_FILE).read_bytes()) == {}
    m.create_topic("t", CFG)
    vals = fill(m, "t", 10)
    m.abandon()
    m = LogManager(tmp_path)
    m.open()
    assert contents(m, "t") == vals
    m.close()


def test_an_older_checkpoint_snapshot_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    # The supervisor writes snapshots on its fsync thread; create/delete topic write on the loop.
    m = LogManager(tmp_path / "d")
    m.open()
    m.create_topic("t", CFG)
    fill(m, "t", 2)
    for p in m.partitions("t"):
        t = p.begin_sync()
        assert t is not None
        t.run()
        p.complete_sync(t)
    old_seq, old = m.snapshot_checkpoint()
    fill(m, "t", 2)
    for p in m.partitions("t"):
        t = p.begin_sync()
        assert t is not None
        t.run()
        p.complete_sync(t)
    new_seq, new = m.snapshot_checkpoint()
    assert new != old and new_seq > old_seq
    m.write_checkpoint(new, new_seq)
    m.write_checkpoint(old, old_seq)  # late: must be ignored
    assert (tmp_path / "d" / CHECKPOINT_FILE).read_bytes() == new
    m.close()
