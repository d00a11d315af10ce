"""Gaps at the Kafka target: offsets the link will never ship (the source's retention deleted
them while the link was cut, or they are older than the topic's max_age) become one marker
record at Kafka (key `edgebus-gap`, header `edgebus-gap: <start>/<end>/<reason>`, its
`edgebus-source` header naming offset end-1; docs/FORMAT.md 7.10), counted in the metrics and
the status, and shipping goes on after it; the records on either side are the source's, record
for record. Real processes: the source supervisor, Tansu behind a relay, `edgebus replicate`."""

from __future__ import annotations

import time

import pytest

from edgebus import Admin

from .conftest import link_status, replicator_metrics, wait_for, with_metrics
from .kafka import (
    KafkaDestination,
    kafka_only_destination,  # noqa: F401 (the fixture `destination`: Kafka)
    source_rows,
)
from .test_conformance import produce
from .test_policies import ends, retention_gap

pytestmark = pytest.mark.integration


@pytest.fixture
def source(make_broker):
    # Retention checked often, so that the test can watch it delete what was never shipped.
    return make_broker({"log": {"retention_check_interval_ms": 100}}, name="src").start()


def split(destination: KafkaDestination, topic: str) -> tuple[list, list]:  # type: ignore[type-arg]
    """(the records as the source had them, the gap markers' (start, end, reason) headers)."""
    rows = destination.contents(topic, 0)
    records = [r for r in rows if not any(k == "edgebus-gap" for k, _ in r[4])]
    gaps = [dict(r[4])["edgebus-gap"].decode() for r in rows if r not in records]
    return records, gaps


def test_retention_past_a_cut_link_leaves_a_gap_marker_and_the_rest_is_exact(
        source, destination, make_replicator) -> None:
    with Admin(socket=source.socket) as a:
        a.create_topic("tiny", 1, {"segment_bytes": 2048})
    produce(source, "tiny", 40, linger_ms=0)
    rep = make_replicator(["tiny"], heartbeat_s=0.3)
    port = with_metrics(rep)
    rep.start()
    wait_for(lambda: len(destination.contents("tiny", 0)) == 40, what="the first records")
    relay = destination.relay
    start = retention_gap(source, "tiny", [relay])
    want_end = ends(source.socket, "tiny")[1][0]
    wait_for(lambda: destination.contents("tiny", 0)[-1][0] == want_end - 1, timeout=60,
             what=f"the records past the gap:\n{rep.log()[-2000:]}")
    records, gaps = split(destination, "tiny")
    assert gaps == [f"40/{start}/retention"], "one marker naming the range"
    src = source_rows(source.socket, "tiny", 0)
    assert [r[0] for r in records[:40]] == list(range(40)), "before the gap: what shipped"
    assert records[40:] == src, "after the gap: the source's records, each once"
    want = f'edgebus_replicator_gap_records_total{{link="l1",partition="0",topic="tiny"}} ' \
           f'{float(start - 40)}'
    assert want in replicator_metrics(port)
    [p] = link_status(port)["partitions"]
    assert p["gap_records"] == start - 40 and not p["held"]
    # A new session reads its cursor back from the tail: kill the replicator, add records.
    rep.kill9()
    produce(source, "tiny", 5, linger_ms=0)
    rep.start()
    wait_for(lambda: split(destination, "tiny")[0][40:] == source_rows(source.socket, "tiny", 0),
             what="the records after a restart, none twice")
    relay.close()


def test_max_age_records_are_not_shipped_and_leave_one_marker(source, destination,
                                                              make_replicator) -> None:
    with Admin(socket=source.socket) as a:
        a.create_topic("stale", 1)
    produce(source, "stale", 30, linger_ms=0)
    time.sleep(2.5)  # these are now older than max_age
    rep = make_replicator([{"pattern": "stale", "max_age": "2s"}])
    port = with_metrics(rep)
    rep.start()
    wait_for(lambda: split(destination, "stale")[1] == ["0/30/max_age"], what="the marker")
    produce(source, "stale", 20, linger_ms=0)  # young: these ship
    wait_for(lambda: len(split(destination, "stale")[0]) == 20, what="the young records")
    records, gaps = split(destination, "stale")
    assert gaps == ["0/30/max_age"]
    assert records == source_rows(source.socket, "stale", 0)[30:]
    assert 'edgebus_replicator_expired_records_total{link="l1",partition="0",topic="stale"} 30.0' \
        in replicator_metrics(port)
