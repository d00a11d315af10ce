"""Damaged segment files, end to end: a real supervisor, real files, a real Consumer (issue 14,
items 3, 4 and 6). Whatever the damage, every record that can be read is delivered at its own
offset, and each damaged offset is a CorruptRecordError naming the partition and the offset, so
that a reader can seek past it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus import format as F
from edgebus.errors import CorruptRecordError

pytestmark = pytest.mark.integration

PER_BATCH = 10
BATCHES = 60
# Small segments, so that the log has sealed segments with batches in their middle.
TOPIC_CONFIG = {"segment_bytes": 4096}


def produce(socket: str, topic: str, partitions: int = 1) -> list[bytes]:
    """BATCHES batches of PER_BATCH records into each partition, each acknowledged durable."""
    vals = [f"r{i:05d}".encode() for i in range(BATCHES * PER_BATCH)]
    with Producer(socket=socket, acks="durable", linger_ms=0) as p:
        for part in range(partitions):
            for b in range(BATCHES):
                p.send_batch(topic, vals[b * PER_BATCH : (b + 1) * PER_BATCH], partition=part).get(10)
    return vals


def batches(d: Path) -> list[tuple[Path, int, int]]:
    """(segment file, byte position, first offset) of every batch, oldest first."""
    out = []
    for seg in sorted(d.glob("*.log")):
        data = seg.read_bytes()
        pos = 0
        while pos < len(data):
            base, length, _count = F.BATCH_SCAN.unpack_from(data, pos)
            out.append((seg, pos, base))
            pos += length
    return out


def flip(path: Path, position: int, xor: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= xor
    path.write_bytes(data)


def consume_all(socket: str, tps: list[TopicPartition]) -> tuple[dict, list]:
    """Read every partition to its end, skipping each damaged offset as the README says;
    returns {tp: [(offset, value)]} and the (tp, offset) of every CorruptRecordError."""
    got: dict[TopicPartition, list] = {tp: [] for tp in tps}
    errors = []
    with Consumer(socket=socket, auto_offset_reset="earliest") as c:
        c.assign(tps)
        c.seek_to_beginning()
        ends = c.end_offsets(tps)
        for _ in range(10_000):
            if all(c.position(tp) >= ends[tp] for tp in tps):
                break
            try:
                for tp, recs in c.poll(2000).items():
                    got[tp] += [(r.offset, r.value) for r in recs]
            except CorruptRecordError as e:
                tp = TopicPartition(e.topic, e.partition)
                assert c.position(tp) == e.offset, "the error names the reader's position"
                assert f"{tp.topic}-{tp.partition}" in str(e) and str(e.offset) in str(e)
                errors.append((tp, e.offset))
                c.seek(tp, e.offset + 1)
        else:
            pytest.fail("the consumer made no progress")
    return got, errors


def expect(vals: list[bytes], lost: set[int]) -> list[tuple[int, bytes]]:
    return [(o, v) for o, v in enumerate(vals) if o not in lost]


def test_flipped_base_offset_in_sealed_segments_item3(broker):
    """A byte of base_offset flipped in a sealed segment (clean stop: not rescanned at start),
    in a middle batch and in a segment's first batch: no record at a wrong offset, no internal
    error; exactly those batches' offsets are refused."""
    with Admin(socket=broker.socket) as a:
        a.create_topic("d", config=TOPIC_CONFIG)
    vals = produce(broker.socket, "d")
    assert broker.stop() == 0
    bs = batches(broker.data_dir / "d-0")
    segs = sorted({b[0] for b in bs})
    assert len(segs) >= 4
    middle = [b for b in bs if b[0] == segs[1]][2]
    first = next(b for b in bs if b[0] == segs[2])
    flip(middle[0], middle[1] + F.BATCH_BASE_OFFSET + 1)  # the 64524-like offsets
    flip(first[0], first[1] + F.BATCH_BASE_OFFSET)
    broker.start()
    got, errors = consume_all(broker.socket, [TopicPartition("d", 0)])
    lost = {o for b in (middle, first) for o in range(b[2], b[2] + PER_BATCH)}
    assert got[TopicPartition("d", 0)] == expect(vals, lost)
    assert [o for _tp, o in errors] == sorted(lost)


def test_crc_corrupt_batch_after_good_ones_item4(broker):
    """One fetch holds good batches, then one failing its CRC: the good ones are delivered, then
    the error at the first offset of the bad batch; other partitions are not held up."""
    with Admin(socket=broker.socket) as a:
        a.create_topic("c", partitions=2, config=TOPIC_CONFIG)
    vals = produce(broker.socket, "c", partitions=2)
    assert broker.stop() == 0
    victim = batches(broker.data_dir / "c-0")[39]  # the issue lost the 780 records before it
    flip(victim[0], victim[1] + F.BATCH_HEADER_SIZE + 5, 0x01)  # a record byte: the CRC fails
    broker.start()
    tps = [TopicPartition("c", 0), TopicPartition("c", 1)]
    # The first poll delivers records (it used to raise at once, delivering none).
    with Consumer(socket=broker.socket, auto_offset_reset="earliest") as c:
        c.assign([tps[0]])
        # (poll returns at the first fetch's records, or raises at its error: 30 s, not 5 s,
        # only bounds a loaded supervisor)
        first = c.poll(30_000, max_records=10_000)[tps[0]]
        assert [r.offset for r in first] == list(range(victim[2]))
        with pytest.raises(CorruptRecordError) as e:
            c.poll(30_000)
        assert (e.value.topic, e.value.partition, e.value.offset) == ("c", 0, victim[2])
        assert "CRC" in str(e.value)
    got, errors = consume_all(broker.socket, tps)
    lost = set(range(victim[2], victim[2] + PER_BATCH))
    assert got[tps[0]] == expect(vals, lost)
    assert got[tps[1]] == expect(vals, set())
    assert errors == [(tps[0], o) for o in sorted(lost)]


def test_bit_rot_past_the_checkpoint_keeps_later_segments_item6(make_broker):
    """After a crash, a flipped byte in a batch past the recovery checkpoint, with several later
    segments of durable-acknowledged records: recovery sets the batch aside (a .corrupt file and
    a WARNING), keeps every later batch at its offset, and the next append continues after
    the old log end."""
    b = make_broker({"log": {"checkpoint_interval_ms": 3_600_000}})
    b.start()
    with Admin(socket=b.socket) as a:
        a.create_topic("rot", config=TOPIC_CONFIG)
    vals = produce(b.socket, "rot")
    b.kill9()
    d = b.data_dir / "rot-0"
    bs = batches(d)
    victim = bs[BATCHES // 3]
    later = [p for p in sorted(d.glob("*.log")) if p > victim[0]]
    assert len(later) >= 3, "durable records in later segments"
    flip(victim[0], victim[1] + F.BATCH_HEADER_SIZE + 7, 0x10)
    b.start()
    log = b.log()
    assert re.search(r"rot-0: damage at byte \d+ .*CRC.*moved aside to .*\.corrupt", log), log
    assert all(p.exists() for p in later), "a later segment was deleted"
    assert list(d.glob("*.corrupt")), "the damaged bytes were not kept aside"
    tp = TopicPartition("rot", 0)
    got, errors = consume_all(b.socket, [tp])
    lost = set(range(victim[2], victim[2] + PER_BATCH))
    assert got[tp] == expect(vals, lost)
    assert errors == [(tp, o) for o in sorted(lost)]
    with Producer(socket=b.socket, acks="durable") as p:
        assert p.send("rot", b"next").get(10).offset == len(vals)
    b.stop()
