"""faust-streaming on the Kafka listener: the teapot's table app (examples/teapot/faust_last.py,
a table of the last reading per kettle) as a real process against a real supervisor. faust's
own partition assignor runs in its leader member (edgebus's leader-assigned groups,
edgebus/server/groups/leader.py); without them its JoinGroup is refused.

The app reads readings and prints its table; once its offsets are committed it is SIGKILLed and
started again with an empty memory store: the readings it would read again are none (the
offsets are committed), so the table it prints can only come from its changelog topic. Then the
restarted app processes new readings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("faust")
from confluent_kafka import Producer as CKProducer

from edgebus import Admin
from edgebus.testing import EmbeddedBroker, PipeLines
from tests.kafka_listener.conftest import create_topic

APP = Path(__file__).resolve().parents[2] / "examples" / "teapot" / "faust_last.py"
PARTITIONS = 2
KETTLES = ("k1", "k2", "k3", "k4")
WAIT_S = 90  # a stuck app fails the test after this; faust's start-up takes seconds


def feed(bootstrap: str, readings: dict[str, list[float]]) -> None:
    p = CKProducer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for kettle, values in readings.items():
        for v in values:
            p.produce("teapot.temperature", json.dumps({"celsius": v}).encode(),
                      key=kettle.encode())
    assert p.flush(30) == 0


class App:
    """The app as a child process; its table lines read with PipeLines (never select() +
    readline())."""

    def __init__(self, bootstrap: str, data_dir: Path, log: Path) -> None:
        self.log = log
        with open(log, "ab") as err:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                # No --partitions: the app reads the count of the topic the test made.
                [sys.executable, str(APP), "--broker", bootstrap, "--data-dir", str(data_dir)],
                stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        self.pipe = PipeLines(self.proc.stdout)
        self.tables: list[dict[str, Any]] = []

    def _read(self) -> None:
        self.tables += [json.loads(line.split(b": ", 1)[1]) for line in self.pipe.read()
                        if line.startswith(b"faust_last: ")]

    def wait_table(self, want: dict[str, float]) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            self._read()
            if self.tables and self.tables[-1] == want:
                return
            assert self.proc.poll() is None, f"the app ended; its log: {self._tail()}"
            time.sleep(0.1)
        pytest.fail(f"the app's table is {self.tables[-1:] or 'not shown'}, not {want}; "
                    f"its log: {self._tail()}")

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def wait_committed(broker: EmbeddedBroker, group: str) -> None:
    """Until the app's group has committed every reading of the source topic (lag 0)."""
    deadline = time.monotonic() + WAIT_S
    with Admin(socket=broker.socket) as a:
        while time.monotonic() < deadline:
            try:
                parts = [p for p in a.describe_group(group).partitions
                         if p.topic == "teapot.temperature"]
            except Exception:  # UnknownGroupError until the first commit
                parts = []
            if len(parts) == PARTITIONS and all(p.lag == 0 for p in parts):
                return
            time.sleep(0.2)
    pytest.fail(f"group {group} did not commit every reading within {WAIT_S} s")


@pytest.mark.integration
def test_table_app_killed_and_restarted_recovers_its_table_from_the_changelog(
        make_broker: Callable[..., EmbeddedBroker], tmp_path: Path) -> None:
    b = make_broker({}).start()  # the Kafka listener on port 0: kafka_bootstrap says which
    boot = b.kafka_bootstrap
    create_topic(b, "teapot.temperature", partitions=PARTITIONS)
    first = {k: [float(10 * i + n) for n in range(5)] for i, k in enumerate(KETTLES)}
    feed(boot, first)
    want = {k: vs[-1] for k, vs in first.items()}
    log = tmp_path / "app.log"
    app = App(boot, tmp_path / "data-1", log)
    try:
        app.wait_table(want)
        wait_committed(b, "teapot-last")
        app.kill9()
        # The changelog holds the table (faust created it through CreateTopics).
        with Admin(socket=b.socket) as a:
            changelog = [t for t in a.list_topics() if "last-reading-changelog" in str(t)]
        assert changelog, "faust made no changelog topic"

        # A new process with an empty memory store and a new data directory: its table can
        # only come from the changelog (every reading's offset is committed).
        app = App(boot, tmp_path / "data-2", log)
        app.wait_table(want)
        assert app.tables[0] == want, f"the restarted app showed {app.tables[0]} first"

        # The second run processes new readings: two kettles report again.
        feed(boot, {"k2": [99.5], "k4": [-3.0]})
        app.wait_table(want | {"k2": 99.5, "k4": -3.0})
    finally:
        if app.proc.poll() is None:
            app.kill9()
    assert "faust" in b.log(), "the supervisor did not log the faust protocol"
