"""close() in one thread while others send (or poll) must never touch an unmapped ring: each race
of close_race_child.py runs in a real client process against a real supervisor, many times; a
write into or a read from the unmapped rings kills the child with SIGSEGV, a send after close()
must raise ClosedError (not AttributeError or a new connection's errors).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgebus import Admin, Producer
from edgebus.errors import OperationTimeoutError

CHILD = Path(__file__).with_name("close_race_child.py")
RACES = 200


def _run(broker, kind: str) -> subprocess.CompletedProcess[str]:
    topic = f"close-race-{kind}"
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(topic, 1)
    with Producer(socket=broker.socket, transport="socket") as p:
        p.send(topic, b"seed", partition=0).get(10)
    return subprocess.run([sys.executable, str(CHILD), broker.socket, topic, str(RACES), kind],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["producer", "consumer"])
def test_close_racing_other_threads_is_safe(broker, kind) -> None:
    r = _run(broker, kind)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"


@pytest.mark.integration
def test_close_with_batches_left_for_a_stopped_supervisor_returns_without_its_thread(
        broker) -> None:
    """close(0) while a hundred batches wait for a supervisor that takes nothing (SIGSTOP: a
    starved one): close() returns with the producer's I/O thread ended and every record failed.
    Before, the thread failed what was left a few batches at a time, one reconnect backoff
    apart, and outlived close() by minutes: close_race_child.py's "threads left after close()",
    which the producer race hit once under load."""
    topic = "close-stopped"
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(topic, 1)
    p = Producer(socket=broker.socket, transport="shm", linger_ms=0, max_in_flight=4)
    p.send(topic, b"warm", partition=0).get(10)
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        futures = []
        while len(p._ready) < 100:  # batches the I/O thread cannot send: nobody reads the rings
            assert len(futures) < 10_000, "sends never queued up behind the stopped supervisor"
            futures.append(p.send(topic, b"g" * 8192, headers=[("h", b"1")], partition=0))
        with contextlib.suppress(OperationTimeoutError):
            p.close(0)
        alive = p._thread.is_alive()
    finally:
        os.kill(broker.pid, signal.SIGCONT)
    assert not alive, "the producer's I/O thread outlived close()"
    assert all(f.failed() for f in futures), [f for f in futures if not f.failed()][:3]
