"""Reads that start at a recently appended batch's remembered position (Segment._recent_rels) give
exactly the bytes that reads through the sparse index give."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from logtest_helpers import append, open_partition, values_of

from edgebus.log import TopicConfig
from edgebus.log.segment import RECENT_BATCHES

pytestmark = pytest.mark.property


def every_read(p, max_bytes_choices=(1, 100, 1000, 1 << 20)) -> dict[tuple[int, int], bytes]:
    return {(off, mb): p.read(off, mb)
            for off in range(p.log_start_offset, p.log_end_offset + 1) for mb in max_bytes_choices}


def forget_all(p) -> None:
    for seg in p._segments:
        seg.forget_recent()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 400)), min_size=1, max_size=160),
       st.sampled_from([0, 200, 4096]), st.sampled_from([1500, 1 << 20]))
def test_recent_positions_read_what_the_index_reads(tmp_path_factory, batches, interval, segment_bytes):
    path: Path = tmp_path_factory.mktemp("p")
    cfg = TopicConfig(index_interval_bytes=interval, segment_bytes=segment_bytes)
    p = open_partition(path, cfg)
    try:
        for i, (count, size) in enumerate(batches):
            append(p, values_of(count, size, start=i * 10), now_ms=1_000 + i)
        with_recent = every_read(p)
        active = p._segments[-1]
        assert 0 < len(active._recent_rels) <= 2 * RECENT_BATCHES
        assert all(not s._recent_rels for s in p._segments[:-1])  # rolled segments forget
        forget_all(p)
        assert every_read(p) == with_recent
    finally:
        p.close()
    reopened = open_partition(path, cfg)  # recovery: nothing remembered, the index only
    try:
        assert all(not s._recent_rels for s in reopened._segments)
        assert every_read(reopened) == with_recent
    finally:
        reopened.close()


def test_truncate_forgets_positions_past_the_cut(tmp_path: Path) -> None:
    p = open_partition(tmp_path, TopicConfig(index_interval_bytes=1 << 20))
    try:
        for i in range(5):
            append(p, values_of(2, 50, start=i * 2))
        seg = p._segments[-1]
        seg.truncate(0)
        assert seg._recent_rels == [] and seg._recent_pos == []
    finally:
        p.abandon()


def test_a_stale_position_is_caught_and_the_index_rebuilt(tmp_path: Path) -> None:
    p = open_partition(tmp_path, TopicConfig(index_interval_bytes=1 << 20))
    try:
        for i in range(6):
            append(p, values_of(1, 30, start=i))
        expected = every_read(p)
        seg = p._segments[-1]
        seg._recent_pos[3] = seg._recent_pos[2]  # points at the wrong batch
        assert every_read(p) == expected
        assert seg._recent_rels == []  # rebuilt from the log: forgotten
    finally:
        p.close()


def test_reads_ending_exactly_at_a_recent_batch_end_equal_the_index_reads(tmp_path: Path) -> None:
    # A read from a recent batch takes exactly the whole batches that fit max_bytes (their ends
    # known from the recent positions): every budget at, just under and just over each end.
    p = open_partition(tmp_path, TopicConfig(index_interval_bytes=1 << 20))
    try:
        for i in range(8):
            append(p, values_of(1 + i % 3, 40 + 30 * i, start=i * 10))
        seg = p._segments[-1]
        ends = [*seg._recent_pos[1:], seg.size]
        budgets = sorted({max(1, e - s + d) for s in seg._recent_pos for e in ends if e > s
                          for d in (-1, 0, 1)})
        with_recent = every_read(p, budgets)
        with_recent.update({(off, mb, False): p.read(off, mb, False) for off, mb in with_recent})
        forget_all(p)
        assert every_read(p, budgets) == {k: v for k, v in with_recent.items() if len(k) == 2}
        assert {(off, mb, False): p.read(off, mb, False) for off, mb, *_ in with_recent} == {
            k: v for k, v in with_recent.items() if len(k) == 3}
    finally:
        p.close()


def test_a_view_read_is_the_same_bytes_without_the_copy(tmp_path: Path) -> None:
    # Partition.read(view=True), a fetch answer's read: where the general read would copy the
    # answer out of its longer read buffer, it hands a memoryview of that buffer instead.
    p = open_partition(tmp_path, TopicConfig(index_interval_bytes=1 << 20))
    try:
        for i in range(8):
            append(p, values_of(2, 200, start=i * 2))
        forget_all(p)  # the general read: from the index, reading past the answer
        for off in range(p.log_end_offset):
            for mb in (1, 500, 1200):
                copied = p.read(off, mb)
                viewed = p.read(off, mb, True, view=True)
                assert type(copied) is bytes and bytes(viewed) == copied
        assert isinstance(p.read(2, 500, True, view=True), memoryview)  # batch 1 alone, mid-buffer
    finally:
        p.close()
