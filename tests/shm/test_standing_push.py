"""A standing fetch answered from the batch just appended and re-armed in place
(StandingFetches.push) ends exactly where the general path (may_answer, fetch_appended,
answered, arm: a new request and a new parked fetch per answer) ends: the same answers in the
consumer's ring, the same standing state, the same counts.

An in-process Broker with real shared-memory rings (SHM_ATTACH: bench/request_inproc.py's
InprocBroker) and requests handed to its dispatcher as ShmLink hands them over; the consumer reads
its response ring after some appends and not after others (then the fetch is held until it
reads, and the link's service resumes it). Each sequence of steps runs twice, once with push
and once with push declining every time, and the two traces must be equal.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.request_inproc import InprocBroker
from edgebus import batch as B
from edgebus.log.topic_config import TopicConfig
from edgebus.protocol import messages as M
from edgebus.server.handlers import data as data_handlers
from edgebus.server.handlers.standing import StandingFetches
from edgebus.server.listeners.stream import Connection
from edgebus.shm import unavailable_reason

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(unavailable_reason() is not None,
                                 reason=f"shared memory unavailable: {unavailable_reason()}")]


class Rig:
    def __init__(self, root: Path, min_bytes: int) -> None:
        self.srv = InprocBroker(root, "t", TopicConfig(partitions=1, segment_bytes=4096,
                                                       index_interval_bytes=300))
        self.logs, self.b = self.srv.logs, self.srv.b
        self.producer = self.srv.connect(shm=True)[0]
        self.consumer = self.srv.connect(shm=True)[0]
        req = M.FetchRequest(10_000, min_bytes, 1 << 20, [M.FetchPartition("t", 0, 0, 1 << 20)])
        self.send(self.consumer, M.Api.FETCH_STANDING, 7, req.to_bytes())
        self.corr = 100

    def send(self, conn: Connection, api: int, corr: int, body: bytes) -> None:
        frame = bytearray(struct.pack("<HHI", api, 0, corr) + body)
        self.b.loop.dispatch(conn, api, 0, corr, memoryview(frame)[8:])

    def read_all(self, conn: Connection) -> list[bytes]:
        link = conn.shm
        out = []
        while (got := link.resp.read(link.efd_space)) is not None:
            out.append(bytes(got))
        return out

    def state(self) -> tuple[Any, ...]:
        link = self.consumer.shm
        w = link.standing_w
        ws = None if w is None else (w.request.partitions[0].offset, w.suspended,
                                      w.recheck_s > 0, w.done, w.correlation_id)
        s = self.b.stats
        return (link.standing, ws, self.consumer.parked, self.b.data.waiters.count,
                len(link.pending), s.records_out, s.batches_out, s.bytes_out,
                self.b.data.standing.armed, self.logs.partition("t", 0).log_end_offset)

    def close(self) -> None:
        self.srv.close()


def run(root: Path, steps: list[tuple[list[bytes], bool]], min_bytes: int) -> list[Any]:
    rig = Rig(root, min_bytes)
    trace: list[Any] = []
    try:
        trace.append(rig.read_all(rig.consumer))
        for i, (values, reads) in enumerate(steps):
            b = B.build_batch([B.encode_record(5, None, v, []) for v in values], 5, 5)
            body = M.ProduceRequest("t", 0, M.ACKS_WRITTEN, b).to_bytes()
            rig.send(rig.producer, M.Api.PRODUCE, i, body)
            rig.read_all(rig.producer)
            trace.append(rig.state())
            if reads:
                trace.append(rig.read_all(rig.consumer))
                rig.consumer.shm.service()  # the consumer's read woke the supervisor
                trace.append(rig.state())
        trace.append(rig.read_all(rig.consumer))
    finally:
        rig.close()
    return trace


step = st.tuples(st.lists(st.binary(max_size=300), min_size=1, max_size=3), st.booleans())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(step, min_size=1, max_size=15), st.sampled_from([1, 1, 250]))
def test_push_ends_where_the_general_path_ends(tmp_path_factory, monkeypatch, steps, min_bytes):
    pushed: list[bool] = []
    push = StandingFetches.push

    def counted(self: StandingFetches, *args: Any) -> bool:
        got = push(self, *args)
        pushed.append(got)
        return got

    # One clock for both runs: the append times stamped into the answers are compared too.
    monkeypatch.setattr(data_handlers, "_time_ns", lambda: 1_700_000_000_000_000_000)
    with monkeypatch.context() as m:
        m.setattr(StandingFetches, "push", counted)
        fast = run(tmp_path_factory.mktemp("fast"), steps, min_bytes)
    with monkeypatch.context() as m:
        m.setattr(StandingFetches, "push", lambda self, *args: False)
        general = run(tmp_path_factory.mktemp("general"), steps, min_bytes)
    assert fast == general
    if min_bytes == 1 and steps[0][1]:
        assert pushed[:2] == [True] * min(2, len(pushed))  # the first answers took the push


def test_push_keeps_one_parked_fetch_and_answers_every_append(tmp_path):
    """The re-arm is in place: one ParkedFetch serves every answer, its offset moving on, and
    each append's answer carries exactly that append's batch."""
    rig = Rig(tmp_path, 1)
    try:
        w = rig.consumer.shm.standing_w
        assert w is not None and w.request.partitions[0].offset == 0
        for i in range(20):
            b = B.build_batch([B.encode_record(5, None, b"v%d" % i, [])], 5, 5)
            rig.send(rig.producer, M.Api.PRODUCE, i, M.ProduceRequest("t", 0, 1, b).to_bytes())
            (answer,) = rig.read_all(rig.consumer)
            assert answer.endswith(b[16:])  # the producer's bytes behind the stamp
            assert rig.consumer.shm.standing_w is w and not w.done
            assert w.request.partitions[0].offset == i + 1
        assert rig.b.data.waiters.count == 1 and rig.consumer.parked == 1
        assert rig.b.stats.records_out == 20 and rig.b.data.standing.armed == 20
    finally:
        rig.close()
