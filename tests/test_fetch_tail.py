"""A fetch that arrives after the batch it asks for was appended, at that batch (a socket
consumer's next FETCH, just late): answered from the batch the partition keeps
(DataHandlers._fetch_tail, Partition.tail_batch) with exactly the bytes the read-based path
gives, and by reading whenever that is not the same fetch (older offsets, more partitions,
min_bytes above the batch, a large batch)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgebus.log.partition import TAIL_BATCH_BYTES
from edgebus.log.topic_config import TopicConfig
from edgebus.protocol import messages as M
from tests.test_fastpath_server import Harness, batch, count_answers, fetch_request, produce_body, read_answer

pytestmark = pytest.mark.unit


def count_tail_answers(h: Harness) -> list[bool]:
    return count_answers(h, "_fetch_tail")


step = st.tuples(
    st.lists(st.binary(max_size=700), min_size=1, max_size=4),  # the batch's record values
    st.integers(0, 2),  # fetch that many batches back from the last one
    st.sampled_from([1, 1, 100, 1 << 20]),  # min_bytes
    st.sampled_from([1, 64, 200, 1 << 20]),  # the request's max_bytes
    st.sampled_from([1, 100, 1 << 20]),  # the partition's max_bytes
    st.booleans(),  # a second partition in the fetch
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(step, min_size=1, max_size=10), st.sampled_from([2000, 1 << 20]))
def test_a_late_fetch_gets_the_read_answer(tmp_path_factory, steps, segment_bytes):
    h = Harness(tmp_path_factory.mktemp("b"))
    try:
        h.logs.create_topic("t", TopicConfig(partitions=2, segment_bytes=segment_bytes))
        used = count_tail_answers(h)
        producer, consumer = h.conn(), h.conn()
        p = h.logs.partition("t", 0)
        bases: list[int] = []
        for i, (values, back, min_bytes, max_bytes, part_max, two) in enumerate(steps):
            bases.append(p.log_end_offset)
            h.send(producer, M.Api.PRODUCE, i, produce_body("t", batch(values)))
            producer.shm.frames.clear()
            offset = bases[max(0, len(bases) - 1 - back)]
            parts = [("t", 0, offset, part_max)] + ([("t", 1, 0, 1 << 20)] if two else [])
            req = fetch_request(parts, min_bytes, max_bytes, wait=0)  # answered now, whatever
            want = read_answer(h, 2000 + i, req)
            h.send(consumer, M.Api.FETCH, 2000 + i, req.to_bytes())
            (got,) = consumer.shm.frames
            consumer.shm.frames.clear()
            assert got == want
            if not two and offset == bases[-1]:
                # the last batch: from memory unless min_bytes asks for more than it holds
                assert used[-1] is (len(p.read(offset, 1 << 20)) >= min_bytes)
            else:
                assert used[-1] is False
    finally:
        h.close()


def test_a_large_batch_is_read(tmp_path):
    h = Harness(tmp_path)
    try:
        h.logs.create_topic("t", TopicConfig())
        used = count_tail_answers(h)
        producer, consumer = h.conn(), h.conn()
        h.send(producer, M.Api.PRODUCE, 1, produce_body("t", batch([b"x" * TAIL_BATCH_BYTES])))
        req = fetch_request([("t", 0, 0, 1 << 20)], wait=0)
        h.send(consumer, M.Api.FETCH, 2, req.to_bytes())
        assert used == [False]
        assert consumer.shm.frames == [read_answer(h, 2, req)]
    finally:
        h.close()
