"""Lag in bytes (issue 11 follow-up): REPLICA_FETCH version 1 says how many bytes of log lie
from the fetch position to the log end, from the segment sizes (no read), and the replicator
reports each partition's lag in records, bytes and seconds (/status, /metrics, `edgebus
replicate --status`). A version-0 request (an older replicator) still gets the version-0 answer,
and a reader of an older supervisor asks version 0 (no bytes: null in the status).

Real processes: a source supervisor, a destination supervisor, `edgebus replicate`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgebus import Admin, BatchReader, Producer
from edgebus.client.replica import FetchVersion, _read_durable

from .conftest import replicator_metrics as metrics
from .conftest import replicator_status as status
from .conftest import wait_for, with_metrics

pytestmark = pytest.mark.integration

INDEX_INTERVAL = 4096  # the topic default: the figure is at most this much above the exact one


def exact_bytes(reader: BatchReader, topic: str, offset: int) -> int:
    """Bytes of the whole batches from the one holding `offset` to the log end, read."""
    n = 0
    while True:
        r = reader.read_durable({(topic, 0): offset}, 1 << 20)[(topic, 0)]
        if not r.data:
            return n
        n += len(r.data)
        offset = r.next_offset


def test_fetch_v1_says_the_bytes_to_the_log_end_and_v0_still_answers(source) -> None:
    with Admin(socket=source.socket) as a:
        a.create_topic("lagb", 1, config={"segment_bytes": 64 * 1024})  # several segments
    with Producer(socket=source.socket, linger_ms=2) as p:
        for i in range(3000):
            p.send("lagb", b"v" * (50 + i % 200), key=b"k%d" % i, partition=0)
        p.flush()
    with BatchReader(source.socket) as r:
        end = r.describe("lagb").end_offsets[0]
        assert len(r.read_durable({("lagb", 0): 0})) == 1
        for off in (0, 1, 777, 1500, 2999, end):
            got = r.read_durable({("lagb", 0): off}, 1024)[("lagb", 0)].bytes_to_end
            want = exact_bytes(r, "lagb", off)
            assert want <= got <= want + INDEX_INTERVAL, (off, got, want)
        assert r.read_durable({("lagb", 0): end})[("lagb", 0)].bytes_to_end == 0
        # A version-0 reader (an older replicator, or this one before an older supervisor):
        # the same answer without the figure.
        v0 = FetchVersion()
        v0.version = 0
        old = _read_durable(r._ch, {("lagb", 0): 0}, 1024, True, version=v0)[("lagb", 0)]
        new = r.read_durable({("lagb", 0): 0}, 1024)[("lagb", 0)]
        assert old.bytes_to_end == -1 and bytes(old.data) == bytes(new.data)
        assert (old.log_end_offset, old.durable_end) == (new.log_end_offset, new.durable_end)


@pytest.mark.parametrize("destination", ["peer"], indirect=True)
def test_a_link_reports_its_lag_in_records_bytes_and_seconds(
        source, destination, make_replicator) -> None:
    with Admin(socket=source.socket) as a:
        a.create_topic("lag-backlog", 1)
    with Producer(socket=source.socket, linger_ms=5) as p:
        for i in range(1500):
            p.send("lag-backlog", b"x" * 1000, key=f"k{i}".encode())
        p.flush()
    rep = make_replicator(["lag-backlog"], max_bytes_per_s=64 * 1024)  # ~23 s to ship it all
    port = with_metrics(rep)
    rep.start()

    def part() -> dict:
        return dict(status(port)["links"]["l1"]["partitions"][0])

    try:
        wait_for(lambda: part()["shipped_records"] > 0 and part()["lag_records"] > 0,
                 what="the link shipping its backlog")
    except AssertionError:
        raise AssertionError(f"{status(port)}\n{rep.log()[-2000:]}") from None
    with BatchReader(source.socket) as r:
        total = exact_bytes(r, "lag-backlog", 0)
        p = part()
        left = exact_bytes(r, "lag-backlog", p["target_end"])
    # The cursor and the figure are one read apart at most (64 KiB with this cap), and the
    # figure is at most an index interval high.
    assert 0 < p["lag_bytes"] < total, p
    assert left - 64 * 1024 <= p["lag_bytes"] <= left + 64 * 1024 + INDEX_INTERVAL, (p, left)
    assert p["lag_seconds"] > 0
    assert 'edgebus_replicator_lag_bytes{link="l1",partition="0",topic="lag-backlog"}' \
        in metrics(port)
    out = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "replicate", "--config",
                          str(rep.config_path), "--status"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert "lag-backlog-0: target end" in out.stdout and "iB / " in out.stdout, out.stdout
    wait_for(lambda: part()["lag_records"] == 0, timeout=90, what="the backlog shipped")
    p = part()
    assert p["lag_bytes"] == 0 and p["lag_seconds"] == 0.0, p
