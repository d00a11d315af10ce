"""Consumer: a fetch response above its frame limit, a deserializer that fails once.

Moved from tests/review/test_review_findings.py (the review that found these bugs); each test
failed on the code it was written against. Real supervisor processes; SIGSTOP/SIGCONT only orders
events deterministically (the kernel keeps queueing socket data meanwhile).
"""

from __future__ import annotations

import pytest

from edgebus import format as F
from edgebus.client.consumer import Consumer
from edgebus.client.producer import Producer
from edgebus.errors import ProtocolError
from edgebus.testing import EmbeddedBroker
from tests.server.rawclient import admin  # the three files were one review's


# --- 5. a fetch response larger than any client accepts wedges a default Consumer ----------------
@pytest.mark.integration
def test_default_consumer_is_wedged_by_a_response_larger_than_its_frame_limit(tmp_path):
    """read_fetch gives every partition "at least one batch" while any budget remains, and the
    supervisor never caps max_bytes: with default consumer settings, two partitions of ~1 MB and
    one 16.5 MB batch make an 18.5 MB response, above ClientProtocol's limit (MAX_FRAME + 1 MiB).
    The consumer raises ProtocolError on every poll from then on."""
    b = EmbeddedBroker(tmp_path / "broker")
    b.start()
    try:
        with admin(b) as a:
            a.create_topic("big", 3, {"max_message_bytes": F.MAX_BATCH_BYTES})
        with Producer(socket=b.socket, transport="socket", batch_size=150_000, linger_ms=20,
                      max_request_size=F.MAX_FRAME_BYTES) as p:
            for part in (0, 1):
                for _ in range(12):
                    p.send("big", b"v" * 100_000, partition=part)
            p.send("big", b"B" * 16_500_000, partition=2)
            p.flush(30)
        c = Consumer("big", socket=b.socket, auto_offset_reset="earliest", transport="socket")
        try:
            try:
                got = c.poll(5000)
            except ProtocolError as e:
                pytest.fail(f"default Consumer.poll raised {e!r}")
            assert got
        finally:
            c.close()
    finally:
        b.cleanup()


# --- 6. a deserializer error loses the records before it --------------------------------------
@pytest.mark.integration
def test_deserializer_error_skips_records_taken_before_it(broker):
    """(HEAD) Consumer._take moved positions past the records deserialized before the failing
    one (`finally:`), but the exception meant they were never returned: never delivered.
    Fixed in the working tree during the review (all-or-nothing _take); regression test."""
    with admin(broker) as a:
        a.create_topic("t", 1)
    with Producer(socket=broker.socket, transport="socket") as p:
        for i in range(10):
            p.send("t", str(i).encode(), partition=0)
        p.flush(10)
    failed: list[bytes] = []

    def vd(v: bytes) -> bytes:
        if v == b"3" and not failed:  # one transient failure
            failed.append(v)
            raise ValueError("cannot decode")
        return v

    c = Consumer("t", socket=broker.socket, auto_offset_reset="earliest", value_deserializer=vd,
                 transport="socket")
    got: list[bytes] = []
    try:
        for _ in range(5):
            try:
                for rs in c.poll(1000).values():
                    got += [r.value for r in rs]
            except ValueError:
                continue
    finally:
        c.close()
    assert sorted(got) == [str(i).encode() for i in range(10)], f"delivered {got}"
