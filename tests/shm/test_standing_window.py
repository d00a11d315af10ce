"""A standing fetch on the rings answers while its consumer has at most tuning.STANDING_WINDOW
bytes of answers unread, or the last answer if larger (edgebus/server/handlers/standing.py
`caught_up`): PRODUCEs that come while the consumer is behind give it answers it takes in one
poll, where each beyond the last one unread used to be held until the consumer's read woke the
supervisor (issue 16, the tail at 10,000 records a second). Beyond the window the fetch is held
as before, and the consumer's read resumes it: a consumer that stops reading still holds at most
the window and one answer.

An in-process Broker with real rings (tests/shm/test_standing_push.py's Rig): requests handed to
its dispatcher as ShmLink hands them over, the consumer's ring read directly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebus import batch as B
from edgebus.protocol import messages as M
from edgebus.shm import unavailable_reason
from edgebus.tuning import STANDING_WINDOW
from tests.shm.test_standing_push import Rig

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(unavailable_reason() is not None,
                                 reason=f"shared memory unavailable: {unavailable_reason()}")]


def _produce(rig: Rig, corr: int, value: bytes) -> None:
    b = B.build_batch([B.encode_record(5, None, value, [])], 5, 5)
    rig.send(rig.producer, M.Api.PRODUCE, corr, M.ProduceRequest("t", 0, M.ACKS_WRITTEN, b).to_bytes())
    rig.read_all(rig.producer)


def _records(reads: list[bytes]) -> list[int]:
    """The base offsets of the batches carried by the answer frames in what was read."""
    from edgebus import format as F
    from edgebus.fastpath.fetch import fetch_response
    from edgebus.protocol.framing import ResponseFrame

    out = []
    for buf in reads:
        pos = 0
        while pos < len(buf):
            n, corr, err = F.RESPONSE_HEADER.unpack_from(buf, pos)
            frame = ResponseFrame(corr, err, memoryview(buf)[pos + F.RESPONSE_HEADER.size:pos + 4 + n])
            pos += 4 + n
            for p in fetch_response(frame).partitions:
                if p.records:
                    out.append(F.BATCH_PREFIX.unpack_from(p.records, 0)[0])
    return out


@pytest.mark.parametrize("min_bytes", [1, 250])
def test_answers_within_the_window_go_out_unread(tmp_path: Path, min_bytes: int) -> None:
    """Ten small answers unread: every one written at once (before the window, with only the
    last answer allowed unread: [0, 1], the rest held until the consumer read)."""
    rig = Rig(tmp_path, min_bytes)
    try:
        rig.read_all(rig.consumer)
        for i in range(10):
            _produce(rig, i, b"v" * 300)
        assert rig.consumer.shm.standing_w.suspended is False
        assert _records(rig.read_all(rig.consumer)) == list(range(10))
    finally:
        rig.close()


@pytest.mark.parametrize("min_bytes", [1, 250])
def test_two_answers_go_out_unread_the_third_waits_for_the_read(tmp_path: Path, min_bytes: int) -> None:
    rig = Rig(tmp_path, min_bytes)
    try:
        rig.read_all(rig.consumer)  # nothing yet (the fetch is parked at the log end)
        # over min_bytes (each append answers on its own), and over half the window: the
        # second answer finds the first unread, within the window; the third finds both, over it
        value = b"v" * (STANDING_WINDOW // 2 + 64)
        for i in range(3):
            _produce(rig, i, value)
        link = rig.consumer.shm
        held = link.standing_w
        first = rig.read_all(rig.consumer)
        # Before: one answer, the second append's held until the consumer read it.
        assert _records(first) == [0, 1]
        assert held is not None and held.suspended  # the third waits for the consumer's read
        link.service()  # the consumer's read signalled the supervisor: it resumes the fetch
        assert _records(rig.read_all(rig.consumer)) == [2]
        for i in range(3, 5):
            _produce(rig, i, value)
        assert _records(rig.read_all(rig.consumer)) == [3, 4]
    finally:
        rig.close()
