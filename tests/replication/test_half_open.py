"""A half-open link that is never closed: the relay forwards nothing and closes nothing, for as
long as it takes, so only the replicator's heartbeat can notice (the cut and half-open events of
the other tests all end in a cut, which would end the session by itself). The link must go down
by itself, keep dialling, and once the relay forwards again ship the backlog written meanwhile
without any new traffic to wake it."""

from __future__ import annotations

from typing import Any

import pytest

from edgebus import Admin

from .conftest import Replicator, link_status, wait_for, with_metrics
from .relay import Relay
from .test_conformance import in_step, produce

pytestmark = pytest.mark.integration


def mirrored_through_relay(source: Any, destination: Any, make_replicator: Any, topic: str,
                           records: int, heartbeat_s: float) -> tuple[Relay, Replicator, int]:
    """`topic` (one partition, `records` records) mirrored to the peer through a relay the test
    can silence, by a replicator with `heartbeat_s` and a metrics endpoint; the link up and
    idle: the replicator has the answer to its last append (its status's target_end), so that
    the heartbeat is the only request a silenced relay can leave unanswered. The relay, the
    replicator and its metrics port."""
    relay = Relay(("127.0.0.1", destination.port))
    with Admin(socket=source.socket) as a:
        a.create_topic(topic, 1)
    produce(source, topic, records)
    rep = make_replicator([topic], address=relay.address, heartbeat_s=heartbeat_s)
    port = with_metrics(rep)
    rep.start()
    wait_for(lambda: in_step(source, destination, topic, 1), what="the mirror")
    wait_for(lambda: link_status(port)["state"] == "up", what="the link up")
    # The peer having the records (in_step) is not the replicator having its answer: an append
    # still in flight when the relay went silent timed out as itself ("no response ... within
    # 1.0 s"), not as a half-open link (test_heartbeat_bound, seen once under load 14).
    wait_for(lambda: [p["target_end"] for p in link_status(port)["partitions"]] == [records],
             what="the last append's answer")
    return relay, rep, port


@pytest.mark.parametrize("destination", ["peer"], indirect=True)
def test_a_silent_link_is_noticed_by_the_heartbeat_and_the_backlog_drains(
        source, destination, make_replicator) -> None:
    relay, rep, port = mirrored_through_relay(source, destination, make_replicator, "quiet", 20,
                                              heartbeat_s=0.3)
    sessions = link_status(port)["sessions"]
    relay.blackhole = True  # from now on nothing is forwarded and nothing is closed
    produce(source, "quiet", 30)  # the backlog, written while the link is silent
    wait_for(lambda: link_status(port)["state"] == "down",
             what=f"the heartbeat to notice the silent link:\n{rep.log()[-2000:]}")
    assert "(retrying)" in rep.log()
    # It keeps dialling: new sessions start while the relay still holds everything.
    wait_for(lambda: link_status(port)["sessions"] >= sessions + 2, what="new sessions")
    assert not in_step(source, destination, "quiet", 1)
    relay.blackhole = False  # the link is back; the source gets no new record from here on
    wait_for(lambda: in_step(source, destination, "quiet", 1), timeout=60,
             what=f"the backlog to drain without new traffic:\n{rep.log()[-2000:]}")
    relay.close()


@pytest.mark.parametrize("destination", ["peer"], indirect=True)
def test_a_silent_or_gone_peer_is_reported_as_the_target_not_the_local_supervisor(
        source, destination, make_replicator) -> None:
    """Silent (half-open), then gone (its supervisor killed): the link's error names the peer's
    replica listener and says edgebus here is fine, never the local supervisor's "is `edgebus
    serve` running? set EDGEBUS_SOCKET"."""
    relay, rep, port = mirrored_through_relay(source, destination, make_replicator, "gone", 5,
                                              heartbeat_s=0.3)
    relay.blackhole = True
    wait_for(lambda: link_status(port)["state"] == "down",
             what=f"the silent link noticed:\n{rep.log()[-2000:]}")
    err = link_status(port)["last_error"]
    assert "half-open link or dead target" in err and "edgebus itself is fine" in err, err
    relay.blackhole = False
    relay.close()  # nothing listens there any more
    wait_for(lambda: "cannot connect to the replica listener" in link_status(port)["last_error"],
             what=f"the gone peer reported:\n{rep.log()[-2000:]}")
    assert "edgebus itself is fine" in link_status(port)["last_error"]
    assert "EDGEBUS_SOCKET" not in rep.log(), rep.log()[-3000:]
