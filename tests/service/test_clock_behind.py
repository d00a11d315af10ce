"""A board without a real-time clock that once ran with its clock in the future: the supervisor
keeps append times from going backwards, so once the clock is corrected every new record is
stamped with that future time and retention by time deletes nothing until the clock gets there.
Before, nothing said so; now the log (once), `edgebus status` and the metrics do. The future is
made with libfaketime (LD_PRELOAD) in the supervisor alone."""

from __future__ import annotations

import glob
import subprocess
import sys

import pytest

from edgebus import Admin, Producer
from edgebus.testing import EmbeddedBroker, free_port, scrape_metrics, wait_for

pytestmark = pytest.mark.integration

LIBS = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")


@pytest.mark.skipif(not LIBS, reason="libfaketime is not installed (apt-get install faketime; "
                                     "./scripts/quickstart installs it as root)")
def test_a_clock_behind_the_log_is_reported(make_broker: object) -> None:
    port = free_port()  # the same after the restart (metrics_port reads the first start's line)
    b: EmbeddedBroker = make_broker({"metrics": {"listen": f"127.0.0.1:{port}"}})  # type: ignore[operator]
    b.start(env={"LD_PRELOAD": LIBS[0], "FAKETIME": "+2d", "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    with Admin(socket=b.socket) as a:
        a.create_topic("clk", partitions=1)
    with Producer(socket=b.socket, acks="durable") as p:
        p.send("clk", b"in the future").get(10)
    assert "behind the latest append time" not in b.log()
    b.stop()

    b.start()  # the clock is right again
    with Producer(socket=b.socket, acks="durable") as p:
        p.send("clk", b"now").get(10)
    lines = [ln for ln in b.log().splitlines() if "behind the latest append time" in ln]
    assert len(lines) == 1 and "the clock is 2.0 d behind" in lines[0] and "clk-0" in lines[0]
    status = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "status", "--socket",
                             b.socket], capture_output=True, text=True, check=True).stdout
    assert "clock:" in status and "BEHIND the log by 1d 23h" in status
    behind = scrape_metrics(port)["edgebus_clock_behind_log_seconds"]
    assert 47 * 3600 < behind <= 48 * 3600


@pytest.mark.skipif(not LIBS, reason="libfaketime is not installed (apt-get install faketime; "
                                     "./scripts/quickstart installs it as root)")
def test_records_stamped_by_an_unset_clock_survive_the_clock_being_set(make_broker: object) -> None:
    """A gateway without RTC whose uplink is down has no NTP: its clock stays at 1970 (or the
    image's date) while it records. When NTP sets the clock, retention by time used to delete
    every one of those records at its next check (their append times are decades old): the very
    data the outage held back for the uplink."""
    b: EmbeddedBroker = make_broker({"log": {"retention_check_interval_ms": 100}})  # type: ignore[operator]
    b.start(env={"LD_PRELOAD": LIBS[0], "FAKETIME": "@1970-01-02 00:00:00",
                 "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    status = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "status", "--socket",
                             b.socket], capture_output=True, text=True, check=True).stdout
    assert "clock:" in status and "NOT SET" in status
    assert "the clock reads 1970-01-02 00:00, so it was never set" in b.log()
    with Admin(socket=b.socket) as a:
        a.create_topic("outage", partitions=1, config={"retention_ms": 3_600_000})
        a.create_topic("expiring", partitions=1, config={"retention_ms": 1})
    with Producer(socket=b.socket, acks="durable") as p:
        for i in range(10):
            p.send("outage", b"during the outage %d" % i).get(10)
    b.stop()

    b.start()  # NTP has set the clock
    lines = [ln for ln in b.log().splitlines() if "retention deleted" in ln]
    with Producer(socket=b.socket, acks="durable") as p:
        p.send("expiring", b"old at once").get(10)  # a segment retention does delete...
    wait_for(lambda: len([ln for ln in b.log().splitlines() if "retention deleted" in ln])
             > len(lines), 30, "a retention check that deletes")  # ...so retention has run
    with Admin(socket=b.socket) as a:
        part = a.describe_topic("outage").partitions[0]
    assert (part.log_start_offset, part.log_end_offset) == (0, 10)
