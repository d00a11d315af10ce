"""Log compaction at the storage layer (edgebus/log/cleaner.py, Partition.replace_segment).

The model test: random puts and deletes over a few keys, with cleanings at random moments, some
of them "crashing" at a random point (the cleaned file half written, or written but not swapped
in, or swapped in without its index: what a SIGKILL leaves), followed by a reopen that runs
recovery. Whatever happened, reading the partition from its start gives, folded by key, exactly
the model's latest value of every live key, at increasing offsets; records of sealed segments
that a later record supersedes are gone after a completed cleaning; tombstones are gone once
their delete_retention_ms has passed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from logtest_helpers import fold, open_partition, sync

from edgebus import batch as B
from edgebus import format as F
from edgebus.batch import build_batch, encode_record, iter_batches, validate_batch
from edgebus.errors import CorruptRecordError
from edgebus.log import Partition, TopicConfig
from edgebus.log.cleaner import CleanPlan, Throttle, clean

pytestmark = pytest.mark.property

CFG = TopicConfig(segment_bytes=600, index_interval_bytes=100, cleanup_policy="compact",
                  delete_retention_ms=0, retention_ms=-1)
NOW = 10_000_000


def put(p: Partition, items: list[tuple[bytes, bytes | None]], now_ms: int = NOW) -> int:
    recs = [encode_record(now_ms, k, v, []) for k, v in items]
    b = bytearray(build_batch(recs, now_ms, now_ms))
    return p.append(b, validate_batch(b), now_ms)[0]


def plan(p: Partition, now_ms: int = NOW) -> CleanPlan:
    cfg = p.config
    return CleanPlan(p.topic, p.partition, tuple(p.compaction_view()), now_ms,
                     cfg.delete_retention_ms, cfg.min_compaction_lag_ms)


def run_cleaning(p: Partition, now_ms: int = NOW) -> int:
    res = clean(plan(p, now_ms), Throttle(1 << 40))
    return sum(p.replace_segment(c.base_offset, c.cleaned_path, c.source_size)
               for c in res.segments)


def read_from_start(p: Partition) -> list[tuple[int, bytes, bytes | None]]:
    """(offset, key, value) of every record, reading as a consumer does: batches from the
    position, moving past compacted-away offsets."""
    out: list[tuple[int, bytes, bytes | None]] = []
    pos = p.log_start_offset
    while pos < p.log_end_offset:
        data = p.read(pos, 4096)
        assert data, f"nothing at {pos} below the log end {p.log_end_offset}"
        for b in iter_batches(data):
            for r in B.decode_batch(b, p.topic, p.partition, pos):
                assert r.offset >= pos
                out.append((r.offset, r.key, r.value))
            base, _l, count = F.BATCH_SCAN.unpack_from(b, 0)
            pos = max(pos, base + count)
    return out


ops = st.lists(st.one_of(
    st.tuples(st.just("put"), st.lists(st.tuples(st.integers(0, 5),
                                                 st.one_of(st.none(), st.binary(min_size=1, max_size=30))),
                                       min_size=1, max_size=6)),
    st.tuples(st.just("clean"), st.sampled_from(["ok", "half", "unswapped", "no-index"])),
    st.tuples(st.just("reopen"), st.just(None)),
), min_size=5, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_model_compaction_with_crashes(steps: list) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="edgebus-compact-"))
    try:
        p = open_partition(tmp / "t-0", CFG)
        model: dict[bytes, bytes] = {}
        offsets: list[int] = []
        for kind, arg in steps:
            if kind == "put":
                items = [(b"k%d" % k, v) for k, v in arg]
                base = put(p, items)
                offsets += range(base, base + len(items))
                for k, v in items:
                    if v is None:
                        model.pop(k, None)
                    else:
                        model[k] = v
            elif kind == "clean":
                sync(p)
                res = clean(plan(p), Throttle(1 << 40))
                for c in res.segments:
                    if arg == "half":  # killed while writing: a torn temp file is left
                        with open(c.cleaned_path, "r+b") as f:
                            f.truncate(max(0, c.new_size // 2))
                        break
                    if arg == "unswapped":  # killed after the fsync, before the rename
                        break
                    if arg == "no-index":  # killed after the rename, before anything else
                        seg_log = c.cleaned_path.with_name(c.cleaned_path.name[:-len(".cleaned.tmp")])
                        os.rename(c.cleaned_path, seg_log)
                        break
                    p.replace_segment(c.base_offset, c.cleaned_path, c.source_size)
                if arg != "ok":
                    rp = p.recovery_point()  # what the last checkpoint says
                    p.abandon()  # the crash: no close, no sync
                    # With the checkpoint: segments before its point are trusted, their index
                    # files only size-checked ("no-index" leaves the old ones: stale, healed).
                    p = open_partition(tmp / "t-0", CFG, rp)
                    assert not list((tmp / "t-0").glob("*.tmp")), "a cleaned temp file survived"
            else:
                p.close()
                p = open_partition(tmp / "t-0", CFG)
            got = read_from_start(p)
            assert [o for o, _k, _v in got] == sorted({o for o, _k, _v in got})
            assert fold(got) == model
        sync(p)
        run_cleaning(p)
        got = read_from_start(p)
        assert fold(got) == model
        # After a complete cleaning, the sealed segments hold only each key's latest record
        # and no tombstone (delete_retention_ms=0).
        active_base = p.segment_bases[-1]
        latest = {k: o for o, k, _v in got}
        for o, k, v in got:
            if o < active_base:
                assert latest[k] == o, f"superseded record {o} of {k!r} survived"
                assert v is not None, f"tombstone {o} of {k!r} survived its retention"
        p.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_cleaning_keeps_offsets_and_shrinks_the_log(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", CFG)
    for i in range(200):
        put(p, [(b"k%d" % (i % 4), b"v%03d" % i)])
    sync(p)
    before = p.size_bytes
    end = p.log_end_offset
    assert run_cleaning(p) >= 1
    assert p.size_bytes < before / 3
    assert p.log_end_offset == end and p.log_start_offset == 0
    got = read_from_start(p)
    assert fold(got) == {b"k%d" % k: b"v%03d" % (196 + k) for k in range(4)}
    # Reading from any offset works, including one in a removed range.
    for off in (0, 1, 57, 150):
        assert p.read(off, 4096)
    p.close()
    q = open_partition(tmp_path / "t-0", CFG)  # recovery accepts compacted-away batches
    assert fold(read_from_start(q)) == fold(got)
    q.close()


def test_min_compaction_lag_and_tombstone_retention_are_obeyed(tmp_path: Path) -> None:
    cfg = TopicConfig(segment_bytes=600, cleanup_policy="compact", retention_ms=-1,
                      delete_retention_ms=60_000, min_compaction_lag_ms=30_000)
    p = open_partition(tmp_path / "t-0", cfg)
    for i in range(100):
        put(p, [(b"a", b"%d" % i)], now_ms=NOW)
    put(p, [(b"a", None)], now_ms=NOW)
    for i in range(40):  # later records seal the segment with the tombstone
        put(p, [(b"b%d" % i, b"x")], now_ms=NOW)
    sync(p)
    assert run_cleaning(p, now_ms=NOW + 10_000) == 0  # younger than the lag: untouched
    assert run_cleaning(p, now_ms=NOW + 40_000) >= 1  # superseded ones go, the tombstone stays
    assert any(k == b"a" and v is None for _o, k, v in read_from_start(p))
    run_cleaning(p, now_ms=NOW + 70_000)  # past delete_retention_ms: the tombstone goes too
    assert not any(k == b"a" for _o, k, _v in read_from_start(p))
    p.close()


def test_a_producer_cannot_send_a_compacted_away_batch() -> None:
    fake = B.build_compacted(0, 5, 0, 0, 0)
    with pytest.raises(CorruptRecordError, match="log cleaner"):
        validate_batch(fake, compacted_ok=False)
    assert validate_batch(fake).record_count == 5  # what a reader of a cleaned log accepts
    assert B.decode_batch(fake, "t", 0) == []


def test_retention_leaves_a_compact_only_topic_alone(tmp_path: Path) -> None:
    cfg = TopicConfig(segment_bytes=600, cleanup_policy="compact", retention_ms=1)
    p = open_partition(tmp_path / "t-0", cfg)
    for i in range(50):
        put(p, [(b"k%d" % i, b"v")], now_ms=NOW)
    assert p.apply_retention(NOW + 10_000_000) == 0
    assert p.log_start_offset == 0
    p.close()
