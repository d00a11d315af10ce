"""close() in one thread while others send (or poll) must never touch an unmapped ring: each race
of close_race_child.py runs in a real client process against a real supervisor, many times; a
write into or a read from the unmapped rings kills the child with SIGSEGV, a send after close()
must raise ClosedError (not AttributeError or a new connection's errors).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgebus import Admin, Producer

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
