"""What comes down from Kafka shows its lag in bytes, not only in records and seconds: Kafka
says how many records are behind a position (the high watermark), never how many bytes, so the
link counts the records it pulled exactly and those still at Kafka at their mean size
(bridges/replicator/pull.py lag_bytes_estimate; docs/REPLICATION.md "Bringing topics down").

As in test_down_lag.py the backlog is held still by freezing the local supervisor (SIGSTOP)
while the link waits for its write. Real processes: Tansu, a supervisor, `edgebus replicate`."""

from __future__ import annotations

import pytest

from .conftest import link_status, wait_for, with_metrics
from .kafka import (
    kafka_only_destination,  # noqa: F401 (the fixture `destination`: Kafka)
)
from .test_down_lag import stopped
from .test_kafka import kafka_producer

pytestmark = pytest.mark.integration


def test_kafka_down_lag_in_bytes(source, destination, make_replicator) -> None:
    destination.create_topic("office.lag", 1)
    kp = kafka_producer(destination)
    kp.produce("office.lag", b"first", key=b"k", partition=0)
    kp.flush(10)
    rep = make_replicator([{"pattern": "lag", "direction": "down", "remote": "office.lag"}],
                          heartbeat_s=5)  # the frozen local append may wait 10 s
    port = with_metrics(rep)
    rep.start()
    part = lambda: link_status(port, "l1:down")["partitions"][0]  # noqa: E731
    wait_for(lambda: part()["target_end"] == 1, what=f"the link up:\n{rep.log()[-2000:]}")
    assert part()["lag_bytes"] == 0, part()
    sizes = []
    with stopped(source.pid):
        for i in range(300):
            key, value = b"k%d" % i, b"c" * (100 + i % 50)
            kp.produce("office.lag", value, key=key, headers=[("n", str(i).encode())],
                       partition=0)
            sizes.append(len(key) + len(value) + 1 + len(str(i)))
        kp.flush(10)
        wait_for(lambda: (part()["lag_records"] or 0) > 0,
                 what=f"the link to read the backlog:\n{rep.log()[-2000:]}")
        got = part()
    n = got["lag_records"]
    assert 0 < n <= 300, got
    assert n * min(sizes) <= got["lag_bytes"] <= n * max(sizes) + 1, (got, min(sizes), max(sizes))
    wait_for(lambda: part()["target_end"] == 301, what=f"the backlog down:\n{rep.log()[-2000:]}")
    got = part()
    assert got["lag_records"] == 0 and got["lag_bytes"] == 0, got
