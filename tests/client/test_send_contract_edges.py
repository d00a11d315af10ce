"""An edge of send()'s contract a review found (docs/INVARIANTS.md 39e), against a real
supervisor on both transports. `send_batch` over two partitions whose records together pass
`buffer_memory` appended the first partition's records, then waited for room for the second and
timed out: it raised `OperationTimeoutError` with half the call taken in (a caller's retry stored
it twice). Now room is made for the whole call before any of it is appended, and a call larger
than `buffer_memory` goes once the buffer is empty, as one record larger than it does.
"""

from __future__ import annotations

import pytest

from edgebus import Admin, Consumer, Producer
from edgebus.client.types import partition_for_key
from edgebus.local_errors import OperationTimeoutError


def _log(broker, topic: str, n: int) -> list[bytes]:
    seen: list[bytes] = []
    with Consumer(topic, socket=broker.socket, transport="socket",
                  auto_offset_reset="earliest") as c:
        for _ in range(100):
            seen += [bytes(r.value) for rs in c.poll(timeout_ms=200).values() for r in rs]
            if len(seen) >= n:
                break
    return seen


@pytest.mark.integration
@pytest.mark.parametrize("linger_ms", [0, 5000])
@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_a_send_batch_over_partitions_is_taken_whole(broker, transport, linger_ms):
    topic = f"batchroom-{transport}-{linger_ms}"
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(topic, 2)
    keys = [b"k%d" % i for i in range(40)]
    ks = [k for k in keys if partition_for_key(k, 2) == 0][:4] + \
         [k for k in keys if partition_for_key(k, 2) == 1][:4]
    values = [b"v%d-" % i + b"x" * 200 for i in range(8)]  # ~1,700 bytes in all
    p = Producer(socket=broker.socket, transport=transport, linger_ms=linger_ms,
                 buffer_memory=1200, max_block_ms=300)
    try:
        try:
            fb = p.send_batch(topic, values, keys=ks)
        except OperationTimeoutError as e:
            pytest.fail(f"send_batch raised with part of it taken in: {e}")
        p.flush(30)
        assert fb.get(10) is not None
    finally:
        p.close(10)
    got = _log(broker, topic, 8)
    assert sorted(got) == sorted(values), "each record of the call once"

