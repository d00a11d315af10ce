"""A socket consumer's standing fetch held until it reads costs its producer's appends no Python
turn (issue 16, sup27). StandingFetches.may_answer holds it, indexed under the partition, and
looks at SIOCOUTQ at every append; in the parked wait each of those appends went back to Python
only to find SIOCOUTQ still not 0 (at 10,000/s on the socket, one parked frame in five). Now C
arms it as held (shm_plane._watch, plane.c w_held) and looks at SIOCOUTQ itself; the appends go
to Python's on_append only once the consumer has read. Real supervisor, raw sockets."""

from __future__ import annotations

import struct
import time
from typing import Any

import pytest

from edgebus import Admin
from edgebus import format as F
from edgebus.batch import iter_batches
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol
from edgebus.server.listeners import sock_plane
from tests.server.test_socket_plane import RawSock, _corr
from tests.shm.test_c_plane import batch, plane_parked, produce_frame

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sock_plane.available(),
                                 reason="the C data plane is not built (edgebus.shm._plane) or "
                                        "is switched off")]

N = 200


def _park(sock: str) -> dict[str, Any]:
    """The parked loop's counters (zeros before it starts, at the first granted connection)."""
    with Admin(socket=sock, transport="socket") as a:
        p = a.status()["shm_plane"]["park"]
    return p or {"socket_reads": 0, "to_python": {"after_append": 0}}


def _offsets(body: bytes, topic: str) -> list[int]:
    """The record offsets a standing answer carries (plane.c standing_frame's layout)."""
    at = 4 + 2 + len(topic) + 4 + 2 + 2 + 8 + 8
    (n,) = struct.unpack_from("<i", body, at)
    out: list[int] = []
    for b in iter_batches(body[at + 4:at + 4 + n]):
        base = struct.unpack_from("<q", b, 0)[0]
        (count,) = F.U32.unpack_from(b, F.BATCH_RECORD_COUNT)
        out += range(base, base + count)
    return out


def test_a_held_socket_consumer_costs_its_producers_appends_no_python_turn(broker) -> None:
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic("held", 1)
    consumer, producer = RawSock(broker.socket), RawSock(broker.socket)
    try:
        corr = next(_corr)
        req = M.FetchRequest(30_000, 1, 1 << 20, [M.FetchPartition("held", 0, 0, 1 << 20)])
        consumer.send(ClientProtocol.encode_request(M.Api.FETCH_STANDING, corr, req))
        deadline = time.monotonic() + 10
        while not plane_parked(broker.socket):
            assert time.monotonic() < deadline, "the standing fetch was not parked"
            time.sleep(0.01)
        before = _park(broker.socket)["to_python"]["after_append"]
        # The consumer reads nothing meanwhile: its first answer stays unread (SIOCOUTQ > 0),
        # so every later append finds its fetch held.
        for i in range(N):
            pc = next(_corr)
            producer.send(produce_frame(pc, "held", 1, batch([b"h%d" % i])))
            producer.wait({pc})
            time.sleep(0.001)  # (the supervisor back in its parked wait)
        after = _park(broker.socket)["to_python"]["after_append"]
        assert _park(broker.socket)["socket_reads"] >= N // 2, "the producer was not parked"
        # before: about one return per append (N); now only what raced the consumer's hold
        assert after - before < N // 10, (before, after)
        # Once the consumer reads, the held fetch answers what came meanwhile (its timer, no
        # append needed), then each new append; every offset once, in order.
        offsets: list[int] = []
        deadline = time.monotonic() + 20
        while len(offsets) < N and time.monotonic() < deadline:
            consumer.until(len(consumer.frames) + 1)
            offsets = [o for c, err, body in consumer.frames for o in _offsets(body, "held")
                       if c == corr and err == 0]
        assert offsets == list(range(N))
        pc = next(_corr)
        producer.send(produce_frame(pc, "held", 1, batch([b"last"])))
        producer.wait({pc})
        consumer.until(len(consumer.frames) + 1)
        assert _offsets(consumer.frames[-1][2], "held") == [N]
    finally:
        consumer.close()
        producer.close()
