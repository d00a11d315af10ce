"""How the previous supervisor stopped: after kill -9 the start says so, and after the machine
went down (the run marker names another boot) it says that unsynced records may be lost, in the
log, `edgebus status` and the metrics; after a clean stop it says nothing. A power cut can drop
unsynced records at a batch boundary, where recovery has nothing to cut: before the run marker,
nothing told an operator that the box had gone down hard at all."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgebus import Admin
from edgebus.testing import EmbeddedBroker, free_port, scrape_metrics
from tests.power_cut import NO_BACKGROUND_SYNC, durable_then_written, power_cut

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
    assert b.log().count(UNCLEAN) == 1 and "the machine stayed up" in b.log()
    assert "started:" in status(b) and "the supervisor was killed or crashed" in status(b)
    assert scrape_metrics(port)["edgebus_unclean_start"] == 1

    b.stop()  # a clean stop after the unclean one: the next start is clean again
    b.start()
    assert b.log().count(UNCLEAN) == 1 and "UNCLEAN" not in status(b)

    b.kill9()  # and the machine went down: the marker names another boot
    (b.data_dir / "running").write_text("another-boot\n")
    b.start()
    assert "the machine went down under it" in b.log()
    assert "the machine went down (power cut" in status(b)
    assert scrape_metrics(port)["edgebus_unclean_start"] == 1


def test_a_recovered_tail_is_synced_so_the_next_start_does_not_scan_it(make_broker: object) -> None:
    """A tail found past the checkpoint was written by the killed run but maybe never fsynced.
    It used to stay so until the next append: a gateway whose power flickers before anything is
    appended scanned the same bytes at every start. Now the first flush syncs it and the
    checkpoint covers it."""
    import json

    import yaml

    from edgebus import Producer
    from edgebus.testing import wait_for

    b: EmbeddedBroker = make_broker({"log": {"flush_interval_ms": 3_600_000,  # type: ignore[operator]
                                             "checkpoint_interval_ms": 100}})
    b.start()
    with Admin(socket=b.socket) as a:
        a.create_topic("tail", partitions=1)
    with Producer(socket=b.socket, acks="written") as p:
        for _ in range(2000):
            p.send("tail", b"x" * 200)
        p.flush(30)
    b.kill9()
    cfg = yaml.safe_load(b.config_path.read_text())
    cfg["log"]["flush_interval_ms"] = 100
    b.config_path.write_text(yaml.safe_dump(cfg))
    b.start()
    opened = [ln for ln in b.log().splitlines() if "opened " in ln]
    assert "scanned 0 bytes" not in opened[-1]  # the tail past the checkpoint

    def fsyncs() -> int:
        out = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "status", "--json",
                              "--socket", b.socket], capture_output=True, text=True, check=True)
        return int(json.loads(out.stdout)["fsyncs"])

    wait_for(lambda: fsyncs() >= 1, 30, "the first flush")
    ckpt = b.data_dir / "recovery-checkpoint"
    wait_for(lambda: "tail 0 0 0 " in ckpt.read_text() and
             ckpt.read_text().split("tail 0 0 0 ")[1].split()[0] != "0", 30,
             "a checkpoint past the recovered tail")
    b.kill9()
    b.start()
    opened = [ln for ln in b.log().splitlines() if "opened " in ln]
    assert "scanned 0 bytes" in opened[-1], opened[-1]


def test_a_data_dir_without_a_run_marker_is_checked_as_after_a_power_cut(
        make_broker: object) -> None:
    """A data directory written by an edgebus from before the run marker has none, and was
    taken as cleanly stopped: a power cut under the old edgebus went unsaid, and a consumer
    group's commit past the log end it left made the group skip records. Nothing says that
    stop was clean, so the first start says "unknown" and checks as after a power cut; it writes
    the marker, so the next start knows. Made here by a supervisor killed after a "power cut"
    (the segment cut back to what was fsynced, with a torn batch) and its marker deleted."""
    from edgebus import Consumer, TopicPartition

    port = free_port()
    b: EmbeddedBroker = make_broker({  # type: ignore[operator]
        "metrics": {"listen": f"127.0.0.1:{port}"}, **NO_BACKGROUND_SYNC})
    b.start()
    tp = TopicPartition("old", 0)
    seg, synced = durable_then_written(b, "old", 100, 50)
    c = Consumer(group_id="old-g", enable_auto_commit=False, socket=b.socket)
    c.assign([tp])
    c.commit({tp: 150})  # it had read them all
    c.close(autocommit=False)
    power_cut(b, seg, synced + 37)  # what was fsynced, and a torn batch
    (b.data_dir / "running").unlink()  # an edgebus from before the marker left none

    b.start()
    assert b.log().count("the data directory has no run marker") == 1
    assert f"recovery of old-0 cut {seg.name} at byte {synced}: 37 bytes cut" in b.log()
    assert "group(s) old-g had committed up to 150" in b.log()
    assert "after an UNKNOWN stop" in status(b)
    with Admin(socket=b.socket) as a:
        assert a.status()["previous_stop"] == "unknown"
    assert scrape_metrics(port)["edgebus_unclean_start"] == 1
    c = Consumer(group_id="old-g", enable_auto_commit=False, socket=b.socket)
    try:
        assert c.committed(tp) == 100  # at the log end: no record appended next is skipped
    finally:
        c.close(autocommit=False)

    b.stop()  # once: a clean stop is marked, and the next start knows it
    b.start()
    assert b.log().count("the data directory has no run marker") == 1
    assert UNCLEAN not in b.log() and "UNKNOWN" not in status(b)
    assert scrape_metrics(port)["edgebus_unclean_start"] == 0
    assert (b.data_dir / "running").exists() and not (b.data_dir / "clean-stop").exists()


def test_a_new_data_directory_is_not_an_unknown_stop(make_broker: object) -> None:
    b: EmbeddedBroker = make_broker()  # type: ignore[operator]
    b.start()
    assert "no run marker" not in b.log() and "UNKNOWN" not in status(b)
    b.stop()
    assert (b.data_dir / "clean-stop").exists() and not (b.data_dir / "running").exists()
