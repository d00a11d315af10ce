"""A record target (Kafka here; NATS runs the same runner code) cannot record a gap: when the
source's retention deletes records the link never shipped, the partition is held, loudly (an
ERROR line, `held` in /status and in the metrics), and nothing after the gap is shipped, so the
destination never looks complete while it is not (docs/REPLICATION.md, "Gaps"). Real processes:
the source supervisor, Tansu behind a relay, `edgebus replicate`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgebus import Admin

from .conftest import wait_for
from .kafka import KafkaDestination
from .test_conformance import produce
from .test_policies import ends, metrics, status, with_metrics

pytestmark = pytest.mark.integration


@pytest.fixture
def source(make_broker):
    # Retention checked often, so that the test can watch it delete what was never shipped.
    return make_broker({"log": {"retention_check_interval_ms": 100}}, name="src").start()


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[KafkaDestination]:
    dest = KafkaDestination(tmp_path)
    yield dest
    dest.close()


def test_retention_past_a_cut_link_holds_the_partition_loudly(source, destination,
                                                                make_replicator) -> None:
    with Admin(socket=source.socket) as a:
        a.create_topic("tiny", 1, {"segment_bytes": 2048})
    produce(source, "tiny", 40, linger_ms=0)
    rep = make_replicator(["tiny"], heartbeat_s=0.3)
    port = with_metrics(rep)
    rep.start()
    wait_for(lambda: len(destination.contents("tiny", 0)) == 40, what="the first records")
    relay = destination.relay
    relay.blackhole = True  # the link is cut: nothing arrives, nothing is closed
    relay.cut()
    produce(source, "tiny", 200, linger_ms=0)  # many small segments
    with Admin(socket=source.socket) as a:
        a.alter_topic_config("tiny", {"retention_ms": 1})
        wait_for(lambda: ends(source.socket, "tiny")[0][0] > 100,
                 what="retention to delete what was never shipped")
        a.alter_topic_config("tiny", {"retention_ms": 86_400_000})
    start = ends(source.socket, "tiny")[0][0]
    relay.blackhole = False  # the link is back
    produce(source, "tiny", 25, linger_ms=0)

    def held() -> str:
        [p] = status(port)["links"]["l1"]["partitions"]
        return str(p["held"])

    wait_for(lambda: "deleted by the source's retention" in held(), timeout=60,
             what=f"the partition to be held:\n{rep.log()[-2000:]}")
    assert f"gap: offsets 40 to {start - 1} were deleted" in held()
    assert "ERROR" in rep.log() and "tiny-0 held" in rep.log()
    assert 'edgebus_replicator_held{link="l1",partition="0",topic="tiny"} 1.0' in metrics(port)
    time.sleep(1.0)  # time enough to ship past the gap, were it going to
    got = destination.contents("tiny", 0)
    assert [r[0] for r in got] == list(range(40)), "nothing after the gap was shipped"
