"""The leader-epoch history (server/kafka/leader_epochs.py) against Kafka's rules, and its file
(docs/FORMAT.md 4.11) on disk: round trip, torn and edited files ignored, bounded growth."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import pytest

from edgebus.server.kafka.leader_epochs import (
    EPOCHS_FILE,
    MAX_EPOCHS_PER_PARTITION,
    UNDEFINED,
    LeaderEpochs,
    PartitionEpochs,
    decode,
    encode,
    stamp,
)

pytestmark = pytest.mark.unit


def test_never_bumped_is_epoch_zero_to_the_log_end() -> None:
    e = PartitionEpochs("ab")
    assert e.current == 0 and e.epoch_at(123) == 0
    assert e.end_offset_for(0, 500) == (0, 500)
    assert e.end_offset_for(1, 500) == (UNDEFINED, UNDEFINED)
    assert e.end_offset_for(-1, 500) == (UNDEFINED, UNDEFINED)


def test_end_offsets_follow_kafkas_epoch_cache() -> None:
    e = PartitionEpochs("ab")
    assert e.bump(900) == 1
    assert e.bump(950) == 2
    assert e.end_offset_for(0, 1000) == (0, 900)
    assert e.end_offset_for(1, 1000) == (1, 950)
    assert e.end_offset_for(2, 1000) == (2, 1000)  # the current epoch: to the log end
    assert e.end_offset_for(3, 1000) == (UNDEFINED, UNDEFINED)
    assert [e.epoch_at(o) for o in (0, 899, 900, 949, 950, 5000)] == [0, 0, 1, 1, 2, 2]


def test_a_cut_below_an_epochs_start_drops_that_epoch() -> None:
    """A cut at 920 after epochs 1@900 and 2@950: epoch 2 held nothing that survived, so it is
    dropped; epoch 3 starts at 920 and epoch 1 (or a client's dropped 2) ends there."""
    e = PartitionEpochs("ab")
    e.bump(900)
    e.bump(950)
    assert e.bump(920) == 3
    assert (e.epochs, e.starts) == ([1, 3], [900, 920])
    assert e.end_offset_for(1, 1000) == (1, 920)
    assert e.end_offset_for(2, 1000) == (1, 920)  # Kafka: the largest known epoch below it
    assert e.end_offset_for(0, 1000) == (0, 900)


def test_a_cut_at_an_epochs_start_replaces_it() -> None:
    e = PartitionEpochs("ab")
    e.bump(900)
    assert e.bump(900) == 2
    assert (e.epochs, e.starts) == ([2], [900])
    assert e.end_offset_for(1, 950) == (1, 900)  # below every kept bump: to the first one
    assert e.end_offset_for(0, 950) == (0, 900)
    assert [e.epoch_at(o) for o in (899, 900)] == [0, 2]


def test_history_is_bounded() -> None:
    e = PartitionEpochs("ab")
    for i in range(MAX_EPOCHS_PER_PARTITION + 10):
        e.bump(10 * (i + 1))
    assert len(e.epochs) == MAX_EPOCHS_PER_PARTITION
    assert e.current == MAX_EPOCHS_PER_PARTITION + 10


def test_file_round_trip_and_damage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = PartitionEpochs("0" * 32), PartitionEpochs("-")
    a.bump(5)
    a.bump(9)
    b.bump(0)
    table = {("t", 0): a, ("u.x", 3): b}
    data = encode(table)
    assert data.startswith(b"edgebus-kafka-leader-epochs 1\n3\nt 0 " + b"0" * 32 + b" 1 5\n")
    assert decode(data) == table
    for bad, why in ((data[:-3], "torn"), (data.replace(b" 9\n", b" 8\n"), "crc"),
                     (b"x" + data, "header")):
        with pytest.raises(ValueError):
            decode(bad)
        (tmp_path / EPOCHS_FILE).write_bytes(bad)
        le = LeaderEpochs(tmp_path)
        with caplog.at_level(logging.ERROR, "edgebus.kafka"):
            le.load()
        assert le.table == {}, why
        assert "Kafka leader epochs start again at 0" in caplog.text


def test_entries_out_of_order_are_refused() -> None:
    e = PartitionEpochs("-")
    e.bump(5)
    e.bump(9)
    good = encode({("t", 0): e}).decode()
    lines = good.split("\n")
    lines[2], lines[3] = lines[3], lines[2]  # epoch 2 before 1
    body = ("\n".join(lines[:-2]) + "\n").encode()
    with pytest.raises(ValueError, match="out of order"):
        decode(body + b"crc32 %08x\n" % zlib.crc32(body))


def test_stamp_sets_each_batchs_epoch_outside_the_crc() -> None:
    """Two Kafka batch headers (bases 0 and 3): the epoch field (bytes 12-15) takes the epoch of
    each base; nothing else changes (the CRC starts at byte 21)."""
    def batch(base: int, n: int) -> bytes:
        body = bytes(range(49))  # 61-byte header after base and length: 49 bytes
        return base.to_bytes(8, "big") + len(body).to_bytes(4, "big") + body

    recs = batch(0, 3) + batch(3, 2)
    e = PartitionEpochs("-")
    e.bump(3)
    out = stamp(recs, e)
    assert out[12:16] == (0).to_bytes(4, "big") and out[61 + 12:61 + 16] == (1).to_bytes(4, "big")
    assert out[:12] == recs[:12] and out[16:61] == recs[16:61] and out[61 + 16:] == recs[61 + 16:]
    assert stamp(recs, None) is recs
