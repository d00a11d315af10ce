"""Reads of the last appended batch served from memory (Partition._tail) give exactly the bytes
the segment read gives, for every offset and limit, while appends of every kind (a producer's,
a mirror's, a gap) move the log end; and the kept batch is the stamped one, copied, so the
caller's buffer may change after the append."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from logtest_helpers import append, make_batch, open_partition, values_of

from edgebus.batch import validate_batch
from edgebus.log import TopicConfig
from edgebus.log.partition import TAIL_BATCH_BYTES

pytestmark = pytest.mark.property

LIMITS = (0, 1, 100, 1000, 1 << 20)


def reads(p, off: int) -> dict[tuple[int, bool], bytes]:
    return {(mb, one): p.read(off, mb, one) for mb in LIMITS for one in (True, False)}


def uncached(p, off: int) -> dict[tuple[int, bool], bytes]:
    tail, p._tail = p._tail, None
    try:
        return reads(p, off)
    finally:
        p._tail = tail


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(1, 4), st.sampled_from([0, 30, 400, TAIL_BATCH_BYTES])),
                min_size=1, max_size=40),
       st.sampled_from([200, 1 << 20]))
def test_the_last_batch_reads_as_from_the_segment(tmp_path_factory, batches, segment_bytes):
    path: Path = tmp_path_factory.mktemp("p")
    p = open_partition(path, TopicConfig(segment_bytes=segment_bytes))
    try:
        for i, (count, size) in enumerate(batches):
            base, _ = append(p, values_of(count, size, start=i * 10), now_ms=1_000 + i)
            cached = p._tail is not None
            assert cached == (len(uncached(p, base)[(1 << 20, True)]) <= TAIL_BATCH_BYTES)
            for off in {base, p.log_start_offset, max(p.log_start_offset, base - 1)}:
                assert reads(p, off) == uncached(p, off)
    finally:
        p.close()


def test_a_kept_batch_is_a_copy_of_the_stamped_bytes(tmp_path: Path) -> None:
    p = open_partition(tmp_path)
    try:
        append(p, values_of(1, 10))
        b = make_batch(values_of(2, 10, start=5), 1_000)
        base, _ = p.append(b, validate_batch(b), 2_000)
        b[-1] ^= 0xFF  # the producer's buffer changes afterwards (a reused read buffer)
        got = p.read(base, 1 << 20)
        assert got == uncached(p, base)[(1 << 20, True)]
        assert got[:8] == base.to_bytes(8, "little")  # stamped
    finally:
        p.close()


def test_another_kind_of_append_ends_it(tmp_path: Path) -> None:
    """A gap (a mirror's) moves the log end: the kept batch is no longer the last thing."""
    p = open_partition(tmp_path)
    try:
        base, _ = append(p, values_of(2, 10))
        assert p._tail is not None
        p.append_gap(p.log_end_offset, p.log_end_offset + 5, 1, 3_000)
        assert reads(p, base) == uncached(p, base)
        big = make_batch(values_of(1, TAIL_BATCH_BYTES), 1_000)
        p.append(big, validate_batch(big), 4_000)
        assert p._tail is None  # too large to keep
    finally:
        p.close()
