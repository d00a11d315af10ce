"""The shared-memory transport with a real supervisor: choice and fallback, large frames,
backpressure from a slow consumer, reclaiming, hostile rings, idle CPU."""

from __future__ import annotations

import logging
import os
import time

import psutil
import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.client import shm_rings
from edgebus.client.channel import SyncChannel, connect
from edgebus.client.shm_channel import ShmAsyncChannel
from edgebus.client.shm_rings import attach
from edgebus.client.socket_acks import LazySocketChannel
from edgebus.errors import BrokerUnavailableError
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol
from edgebus.testing import wait_for
from tests.shm.helpers import dev_shm_entries, memfd_mappings, open_fds, read_answers

pytestmark = pytest.mark.integration


def roundtrip(sock: str, transport: str, n: int = 2000) -> list:
    topic = f"rt-{transport}"
    with Admin(socket=sock, transport=transport) as a:
        a.create_topic(topic, 2)
    with Producer(socket=sock, transport=transport, linger_ms=1) as p:
        fs = [p.send(topic, f"v{i}".encode(), key=f"k{i % 7}".encode(),
                     headers=[("h", b"x"), ("n", None)]) for i in range(n)]
        fb = p.send_batch(topic, [f"b{i}".encode() for i in range(n)], partition=1)
        p.flush(30)
        assert all(f.get(10).offset >= 0 for f in fs)
        fb.get(10)
        kind = ShmAsyncChannel if transport != "socket" else LazySocketChannel
        assert type(p._channel) is kind
    c = Consumer(topic, socket=sock, transport=transport, auto_offset_reset="earliest")
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 2 * n and time.monotonic() < deadline:
        for recs in c.poll(500, max_records=5000).values():
            got += [(r.partition, r.offset, r.key, r.value, r.headers) for r in recs]
    assert c._ch.using_shm == (transport != "socket") if hasattr(c._ch, "using_shm") else True
    c.close()
    return got


@pytest.mark.parametrize("transport", ["shm", "socket", "auto"])
def test_every_transport_round_trips(broker, transport):
    got = roundtrip(broker.socket, transport)
    assert len(got) == 4000
    values = sorted(v for _, _, _, v, _ in got)
    assert values == sorted([f"v{i}".encode() for i in range(2000)] + [f"b{i}".encode() for i in range(2000)])
    assert all(h == [("h", b"x"), ("n", None)] for _, _, k, _, h in got if k is not None)


def test_auto_falls_back_with_a_debug_line_and_shm_is_strict(broker, monkeypatch, caplog):
    monkeypatch.setattr(shm_rings, "unavailable_reason", lambda: "no rings in this test")
    with caplog.at_level(logging.DEBUG, logger="edgebus.client.shm"), \
            Admin(socket=broker.socket) as a:
        a.create_topic("fb", 1)
        assert not a._ch.using_shm
    assert "using the socket transport" in caplog.text and "no rings in this test" in caplog.text
    with pytest.raises(BrokerUnavailableError, match="no rings in this test"):
        Admin(socket=broker.socket, transport="shm")
    with pytest.raises(ValueError):
        Admin(socket=broker.socket, transport="carrier-pigeon")
    with Admin(socket=broker.socket, transport="socket") as a:
        assert type(a._ch) is SyncChannel


def test_frames_too_large_for_a_ring_use_the_socket(broker):
    with Admin(socket=broker.socket) as a:
        a.create_topic("big", 1, config={"max_message_bytes": 8 << 20})
    # A producer whose requests need a bigger ring asks for one (8 MiB batches -> 32 MiB ring).
    with Producer(socket=broker.socket, transport="shm", batch_size=6 << 20,
                  max_request_size=8 << 20, linger_ms=50) as p:
        fb = p.send_batch("big", [os.urandom(1000) for _ in range(5000)])  # ~5 MB, one batch
        p.flush(30)
        fb.get(10)
    # A fetch answer of ~5 MB exceeds the consumer's 2 MiB max frame: it comes on the socket.
    c = Consumer("big", socket=broker.socket, transport="shm", auto_offset_reset="earliest",
                 max_partition_fetch_bytes=16 << 20, fetch_max_bytes=16 << 20)
    n = 0
    deadline = time.monotonic() + 30
    while n < 5000 and time.monotonic() < deadline:
        n += sum(len(v) for v in c.poll(500, max_records=10_000).values())
    assert c._ch.using_shm
    c.close()
    assert n == 5000


def test_rings_are_reclaimed_when_clients_close(broker):
    pid = broker.pid
    # The first attach makes the supervisor's one-time shm state (the C data plane's module, the
    # parked loop's epoll set: shm_park.py); what each client holds must come back after it.
    with Admin(socket=broker.socket, transport="shm") as first:
        first.list_topics()
    wait_for(lambda: memfd_mappings(pid) == 0, 30, "the supervisor to unmap the first client's ring")
    before_fds = open_fds(pid)
    shm_before = dev_shm_entries()
    clients = [Admin(socket=broker.socket, transport="shm") for _ in range(5)]
    for c in clients:
        c.list_topics()
    assert memfd_mappings(pid) >= 5
    for c in clients:
        c.close()
    wait_for(lambda: memfd_mappings(pid) == 0, 30, "the supervisor to unmap every ring")
    wait_for(lambda: open_fds(pid) <= before_fds, 30, "the supervisor to close the descriptors")
    assert dev_shm_entries() == shm_before


def test_a_slow_consumer_stalls_only_itself(make_broker):
    b = make_broker({"limits": {"max_output_buffer_bytes": 1 << 20}}).start()
    with Admin(socket=b.socket) as a:
        a.create_topic("slow", 1)
    with Producer(socket=b.socket) as p:
        p.send_batch("slow", [b"x" * 1000] * 100)  # ~100 kB of records
        p.flush(10)
    # The slow client: 64 KiB rings, and fetch requests whose answers it does not read.
    sock = connect(b.socket)
    link = attach(sock, 64 * 1024, 64 * 1024)
    fetch = M.FetchRequest(0, 1, 100_000, [M.FetchPartition("slow", 0, 0, 100_000)])
    sent = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        frame = ClientProtocol.encode_request(M.Api.FETCH, sent + 1, fetch)
        if not link.req.write(frame, link.efd_sup):
            break  # its own request ring is full: backpressure reached this client
        sent += 1
    assert link.req.used() > 0, "the supervisor kept reading the slow client's requests"
    # Everyone else is served meanwhile: a round trip that stalled behind the slow client would
    # run out roundtrip's bounded waits (how fast it goes is the benchmarks' business).
    got = roundtrip(b.socket, "shm", 1000)
    assert len(got) == 2000
    rss = psutil.Process(b.pid).memory_info().rss
    assert rss < 300 << 20, f"the supervisor grew to {rss >> 20} MiB"
    # The slow client finally reads: every request is answered, in order of arrival.
    assert read_answers(link, sent) == sent
    link.close()
    sock.close()


def test_a_hostile_ring_closes_only_its_connection(broker):
    good = Admin(socket=broker.socket, transport="shm")
    sock = connect(broker.socket)
    link = attach(sock)
    # A frame whose length says 4: shorter than a request header.
    assert link.req.write(b"\x04\x00\x00\x00abcd", link.efd_sup)
    link.sock.settimeout(5)
    assert link.sock.recv(10) == b"", "the supervisor should close the offending connection"
    wait_for(lambda: memfd_mappings(broker.pid) == 1, 30, "the offending connection's rings unmapped")
    good.create_topic("still-fine", 1)
    assert "still-fine" in good.list_topics()
    good.close()
    link.close()
    sock.close()


def test_idle_clients_cost_no_cpu(broker):
    clients = [Admin(socket=broker.socket, transport="shm") for _ in range(10)]
    for c in clients:
        c.list_topics()
    c = Consumer(socket=broker.socket, transport="shm")
    with Admin(socket=broker.socket) as a:
        a.create_topic("idle", 1)
    c.assign([TopicPartition("idle", 0)])
    c.poll(0)  # a consumer parked on a long poll counts as idle too
    time.sleep(0.5)  # past every spin window
    proc = psutil.Process(broker.pid)
    t0 = proc.cpu_times()
    time.sleep(3)
    t1 = proc.cpu_times()
    used = (t1.user + t1.system) - (t0.user + t0.system)
    assert used / 3 < 0.02, f"idle supervisor used {used / 3:.1%} CPU"
    for x in clients:
        x.close()
    c.close()


@pytest.mark.parametrize("linger_ms", [0, 5])
@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_bulk_send_batch_offsets_order_and_splitting(broker, transport, linger_ms):
    """send_batch of plain values (the C-encoded path) mixed with send(): every future gives the
    offset the record really has, batches split at batch_size, order is kept."""
    topic = f"bulk-{transport}-{linger_ms}"
    with Admin(socket=broker.socket) as a:
        a.create_topic(topic, 1)
    expect: list[bytes] = []
    futures = []
    with Producer(socket=broker.socket, transport=transport, linger_ms=linger_ms,
                  batch_size=4096) as p:
        for round_ in range(20):
            vals = [f"r{round_}-{i}".encode() * (1 + i % 7) for i in range(round_ * 13 + 1)]
            futures.append(("batch", p.send_batch(topic, vals, partition=0), len(expect)))
            expect += vals
            futures.append(("one", p.send(topic, f"single{round_}".encode(), partition=0), len(expect)))
            expect.append(f"single{round_}".encode())
        p.flush(30)
        for kind, f, first in futures:
            if kind == "batch":
                assert [m.offset for m in f.get(10)] == list(range(first, first + f.count))
            else:
                assert f.get(10).offset == first
    c = Consumer(topic, socket=broker.socket, transport=transport, auto_offset_reset="earliest")
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(got) < len(expect) and time.monotonic() < deadline:
        for recs in c.poll(500).values():
            got += [r.value for r in recs]
    c.close()
    assert got == expect
