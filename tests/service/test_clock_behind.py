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
from edgebus.testing import EmbeddedBroker, free_port, scrape_metrics

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
