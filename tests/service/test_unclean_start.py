"""Whether the previous supervisor stopped cleanly: after kill -9 (or a power cut) the start says
so, in the log, `edgebus status` and the metrics; after a clean stop it says nothing. A power cut
can drop unsynced records at a batch boundary, where recovery has nothing to cut: before the
clean-stop marker, nothing told an operator that the box had gone down hard at all."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgebus import Admin
from edgebus.testing import EmbeddedBroker, free_port, scrape_metrics

pytestmark = pytest.mark.integration
UNCLEAN = "the previous supervisor did not stop cleanly"


def status(b: EmbeddedBroker) -> str:
    return subprocess.run([sys.executable, "-m", "edgebus.cli.main", "status", "--socket",
                           b.socket], capture_output=True, text=True, check=True).stdout


def test_a_start_after_kill9_says_the_stop_was_unclean(make_broker: object) -> None:
    port = free_port()
    b: EmbeddedBroker = make_broker({"metrics": {"listen": f"127.0.0.1:{port}"}})  # type: ignore[operator]
    b.start()
    with Admin(socket=b.socket) as a:
        a.create_topic("stops", partitions=1)
    assert "UNCLEAN" not in status(b)  # a new data directory
    b.stop()
    b.start()
    assert UNCLEAN not in b.log() and "UNCLEAN" not in status(b)
    assert scrape_metrics(port)["edgebus_unclean_start"] == 0

    b.kill9()
    b.start()
    assert b.log().count(UNCLEAN) == 1
    assert "started:" in status(b) and "after an UNCLEAN stop" in status(b)
    assert scrape_metrics(port)["edgebus_unclean_start"] == 1

    b.stop()  # a clean stop after the unclean one: the next start is clean again
    b.start()
    assert b.log().count(UNCLEAN) == 1 and "UNCLEAN" not in status(b)
