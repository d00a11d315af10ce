"""Memory kept for clients (issue 14 item 9), with a real supervisor and real stuck clients.

A stuck client pipelines 16 MiB fetches on a raw socket and never reads the answers, so the
supervisor queues them (up to limits.max_output_buffer_bytes and one answer more).

- When such clients disconnect, the supervisor's RSS comes back while it stays idle (it used to
  keep ~320 MB until some later request let the garbage collector free the connections).
- limits.max_output_total_bytes bounds what all connections together queue: a fetch at the
  budget gets ServerBusyError, counted in `edgebus status` and the metrics; once the stuck
  clients go, fetches are served again.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.request
from collections.abc import Callable

import psutil
import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.errors import ServerBusyError
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol
from edgebus.testing import EmbeddedBroker

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
FETCH_BYTES = 16 * MiB


def fill(b: EmbeddedBroker, topic: str, mib: int) -> None:
    with Admin(socket=b.socket) as a:
        a.create_topic(topic)
    value = b"x" * (256 * 1024)
    with Producer(socket=b.socket, acks="written") as p:
        for _ in range(mib * 4):
            p.send(topic, value)
        p.flush()


def stuck_client(b: EmbeddedBroker, topic: str, fetches: int) -> socket.socket:
    """A raw connection that pipelines `fetches` 16 MiB fetches from offset 0 and reads nothing."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(b.socket)
    req = M.FetchRequest(0, 0, FETCH_BYTES, [M.FetchPartition(topic, 0, 0, FETCH_BYTES)])
    s.sendall(b"".join(ClientProtocol.encode_request(M.Api.FETCH, corr, req)
                       for corr in range(1, fetches + 1)))
    return s


def limits(b: EmbeddedBroker) -> dict:
    with Admin(socket=b.socket) as a:
        return a.status()["limits"]


def wait_for(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def rss(b: EmbeddedBroker) -> int:
    assert b.pid is not None
    return psutil.Process(b.pid).memory_info().rss


def test_buffers_of_closed_connections_are_released_while_idle(make_broker) -> None:
    b = make_broker().start()
    fill(b, "big", 20)
    # Warm up the read path with one whole 16 MiB fetch, as the stuck clients will do.
    with Consumer(socket=b.socket, auto_offset_reset="earliest", fetch_max_bytes=FETCH_BYTES,
                  max_partition_fetch_bytes=FETCH_BYTES) as c:
        c.assign([TopicPartition("big", 0)])
        assert c.poll(timeout_ms=5000, max_records=1000)
    baseline = rss(b)
    clients = [stuck_client(b, "big", 8) for _ in range(4)]
    wait_for(lambda: limits(b)["output_bytes"] >= 200 * MiB)  # each holds 64 MiB and more
    held = rss(b)
    assert held > baseline + 200 * MiB, (baseline, held)
    for s in clients:
        s.close()
    # Idle from here on (no request at all): the memory must come back by itself.
    wait_for(lambda: rss(b) < baseline + 48 * MiB, timeout=30)
    assert limits(b)["output_bytes"] == 0


def metrics_port(b: EmbeddedBroker) -> int:
    m = re.search(r"metrics endpoint on http://127\.0\.0\.1:(\d+)/metrics", b.log())
    assert m, b.log()
    return int(m.group(1))


def test_output_budget_refuses_fetches_until_stuck_clients_go(make_broker) -> None:
    b = make_broker({"limits": {"max_output_total_bytes": "16MiB",
                                "max_output_buffer_bytes": "8MiB"},
                     "metrics": {"listen": "127.0.0.1:0"}}).start()
    fill(b, "big", 20)
    clients = [stuck_client(b, "big", 4) for _ in range(2)]
    wait_for(lambda: limits(b)["output_bytes"] >= 16 * MiB)
    consumer = Consumer(socket=b.socket, auto_offset_reset="earliest")
    consumer.assign([TopicPartition("big", 0)])
    with pytest.raises(ServerBusyError) as e:
        consumer.poll(timeout_ms=1000, max_records=10)
    assert "limits.max_output_total_bytes" in str(e.value) and e.value.retriable
    lim = limits(b)
    assert lim["refused_fetches_output_budget"] >= 1
    assert lim["output_bytes"] <= 16 * MiB + 2 * FETCH_BYTES  # the budget, plus the answers in hand
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port(b)}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(r"^edgebus_fetches_refused_output_budget_total (\S+)$", text, re.M)
    assert m and float(m.group(1)) >= 1, text
    assert re.search(r"^edgebus_output_queued_bytes (\S+)$", text, re.M), text
    for s in clients:
        s.close()
    wait_for(lambda: limits(b)["output_bytes"] == 0)
    got = consumer.poll(timeout_ms=5000, max_records=10)  # served again
    assert sum(len(v) for v in got.values()) > 0
    consumer.close()
