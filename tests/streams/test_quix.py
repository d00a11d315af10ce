"""Quix Streams on the Kafka listener: the teapot's windowed app (examples/teapot/quix_max.py),
SIGKILLed three times mid-stream and restarted each time with its RocksDB state directory wiped
(so its window state can only come back from the changelog topic). Exactly-once: every window
result is in the output topic exactly once (read read_committed) with the right maximum, which a
window that spans a kill gets only if its state was restored. At-least-once: every window is
there at least once, with the right maximum.

The readings are fed in one phase per app instance, each released once that instance has been
started, so that every instance has new readings to turn into results. (Fed all at once, the
feed could end before the third instance started under load; if the instance before had
committed everything, the new one had nothing to print and the test waited out APP_STUCK_S: the
"stall" seen twice, reproduced at load 11 with the whole log kept: the supervisor's group was
stable, the app idle at the end of its input with everything committed.)"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("quixstreams")
from confluent_kafka import Producer as CKProducer

from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic
from tests.kafka_listener.readers import read_to_end

APP = Path(__file__).resolve().parents[2] / "examples" / "teapot" / "quix_max.py"
KETTLES = ("k1", "k2", "k3")
READINGS = 240  # per kettle
STEP_MS = 250  # between a kettle's readings
WINDOW_MS = 1000
KILLS = 3
APP_STUCK_S = 240  # no result printed for this long: the app is stuck (not slow)


def celsius(k: int, i: int) -> float:
    return float((i * 37 + k * 11) % 97)


def expected() -> dict[tuple[str, int], float]:
    out: dict[tuple[str, int], float] = {}
    for k, kettle in enumerate(KETTLES):
        for i in range(READINGS):
            start = (i * STEP_MS) // WINDOW_MS * WINDOW_MS
            out[(kettle, start)] = max(out.get((kettle, start), -1.0), celsius(k, i))
    return out


PHASES = KILLS + 1  # one per app instance
PHASE = READINGS // PHASES  # readings per kettle in a phase


def feed(bootstrap: str, base_ms: int, phases: list[threading.Event], done: threading.Event,
         stop: threading.Event) -> None:
    """Phase n's readings once phases[n] is set (its app instance started), paced so that the
    kill after its first results lands mid-stream."""
    p = CKProducer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(READINGS):
        if i % PHASE == 0:
            while not phases[min(i // PHASE, PHASES - 1)].wait(0.5):
                if stop.is_set():
                    return
        for k, kettle in enumerate(KETTLES):
            p.produce("teapot.temperature", json.dumps({"celsius": celsius(k, i)}).encode(),
                      key=kettle.encode(), timestamp=base_ms + i * STEP_MS)
        p.poll(0)
        time.sleep(0.03)
    # One later reading per kettle closes every window of the readings above.
    for kettle in KETTLES:
        p.produce("teapot.temperature", json.dumps({"celsius": 0.0}).encode(), key=kettle.encode(),
                  timestamp=base_ms + READINGS * STEP_MS + 10 * WINDOW_MS)
    assert p.flush(30) == 0
    done.set()


def results(bootstrap: str, isolation: str) -> list[tuple[str, int, float]]:
    msgs, _ended = read_to_end(bootstrap, "teapot.max-per-minute", isolation, timeout_s=20,
                               fail_on_error=False)
    out = []
    for m in msgs:
        v = json.loads(m.value())
        out.append((m.key().decode(), v["start_ms"], v["max_celsius"]))
    return out


def start_app(bootstrap: str, state: Path, guarantee: str, log: Path) -> subprocess.Popen[bytes]:
    shutil.rmtree(state, ignore_errors=True)  # state must come back from the changelog
    return subprocess.Popen(
        [sys.executable, str(APP), "--broker", bootstrap, "--guarantee", guarantee, "--window-ms",
         str(WINDOW_MS), "--state-dir", str(state), "--commit-interval", "1",
         "--group", f"teapot-{guarantee}"],
        stdout=subprocess.PIPE, stderr=open(log, "ab"), start_new_session=True)


def wait_output_lines(proc: subprocess.Popen[bytes], n: int, log: Path) -> None:
    """Until the app printed `n` results. A bound only for a stuck app, generous: a restarted app
    imports Quix Streams and joins its group again, which took over 60 s on a machine at load 8."""
    assert proc.stdout is not None
    seen, buf = 0, b""
    deadline = time.monotonic() + APP_STUCK_S
    while seen < n:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, (f"no results from the app within {APP_STUCK_S} s; its log: "
                       f"{log.read_text()[-3000:]}")
        chunk = os.read(proc.stdout.fileno(), 65536)
        assert chunk, f"the app ended; its log: {log.read_text()[-3000:]}"
        buf += chunk
        seen = buf.count(b"quix_max: {")  # results, not the start-up line


@pytest.mark.parametrize("guarantee", ["exactly-once", "at-least-once"])
def test_windowed_app_killed_three_times(make_broker: Callable[..., EmbeddedBroker],
                                         tmp_path: Path, guarantee: str) -> None:
    b = make_broker({}).start()  # the Kafka listener on port 0: kafka_bootstrap says which
    boot = b.kafka_bootstrap
    for t in ("teapot.temperature", "teapot.max-per-minute", "teapot.commands"):
        create_topic(b, t)
    state, log = tmp_path / "state", tmp_path / "app.log"
    done, stop = threading.Event(), threading.Event()
    phases = [threading.Event() for _ in range(PHASES)]
    base = (int(time.time() * 1000) // WINDOW_MS - 100_000) * WINDOW_MS
    feeder = threading.Thread(target=feed, args=(boot, base, phases, done, stop), daemon=True)
    feeder.start()
    proc = start_app(boot, state, guarantee, log)
    phases[0].set()
    try:
        for n in range(KILLS):
            wait_output_lines(proc, 4, log)  # mid-stream: results of its phase printed
            time.sleep(1.0)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            proc = start_app(boot, state, guarantee, log)
            phases[n + 1].set()  # this instance's readings: it has results to print
        want = {(k, base + s): m for (k, s), m in expected().items()}
        isolation = "read_committed" if guarantee == "exactly-once" else "read_uncommitted"
        deadline = time.monotonic() + APP_STUCK_S  # until every window is out (or the app is stuck)
        got: list[tuple[str, int, float]] = []
        while time.monotonic() < deadline:
            got = results(boot, isolation)
            if done.is_set() and want.keys() <= {(k, s) for k, s, _ in got}:
                break
            time.sleep(1)
    finally:
        stop.set()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    feeder.join(5)
    assert done.is_set()
    windows = {(k, s) for k, s, _ in got}
    assert want.keys() <= windows, (f"missing windows {sorted(want.keys() - windows)[:5]}; "
                                    f"app log: {log.read_text()[-2000:]}")
    extra = windows - want.keys()
    assert not extra, f"windows that were never fed: {sorted(extra)[:5]}"
    for k, s, m in got:  # every copy carries the window's true maximum (state restored)
        assert m == want[(k, s)], f"window {k}@{s - base}: {m} != {want[(k, s)]}"
    print(f"{guarantee}: {len(got)} results for {len(windows)} windows")
    if guarantee == "exactly-once":
        dup = [w for w, n in Counter((k, s) for k, s, _ in got).items() if n > 1]
        assert not dup, f"{len(dup)} windows more than once, e.g. {dup[:3]}"
