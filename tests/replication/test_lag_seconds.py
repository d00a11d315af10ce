"""Issue 11 item 5: a link's lag in seconds is the age of the oldest record not yet shipped
(the append time of the batch at the cursor), not the time since the replicator last caught up:
a backlog written before the replicator started is as old as it is. Bounds only, no clock race:
the head record was appended after `before` and before `written`."""

from __future__ import annotations

import time

import pytest

from edgebus import Admin, Producer

from .conftest import link_status, wait_for, with_metrics

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("destination", ["peer"], indirect=True)
def test_lag_seconds_is_the_age_of_the_oldest_unshipped_record(
        source, destination, make_replicator) -> None:
    with Admin(socket=source.socket) as a:
        a.create_topic("old-backlog", 1)
    before = time.time()
    with Producer(socket=source.socket, linger_ms=5) as p:
        for i in range(1500):
            p.send("old-backlog", b"x" * 1000, key=f"k{i}".encode())
        p.flush()
    written = time.time()
    time.sleep(3.0)  # the backlog ages before the replicator exists
    rep = make_replicator(["old-backlog"], max_bytes_per_s=64 * 1024)  # ~23 s to ship it all
    port = with_metrics(rep)
    rep.start()

    def behind() -> bool:
        parts = link_status(port)["partitions"]
        return bool(parts) and (parts[0]["lag_records"] or 0) > 0 and \
            parts[0]["shipped_records"] > 0

    try:
        wait_for(behind, what="the link shipping its backlog")
    except AssertionError:
        raise AssertionError(f"{link_status(port)}\n{rep.log()[-2000:]}") from None
    asked = time.time()
    part = link_status(port)["partitions"][0]
    answered = time.time()
    assert part["lag_records"] > 0, part
    # The record at the cursor was appended between `before` and `written`.
    assert asked - written - 0.01 <= part["lag_seconds"] <= answered - before + 0.01, part
