"""close() of a group member in one thread while another polls or commits: the group link (its
thread and connection to the coordinator, edgebus/client/group_link.py) must end the other
thread's call with ClosedError, never hang it or leave the group thread running. Each race of
group_close_race_child.py runs in a real client process against a real supervisor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgebus import Admin, Producer

CHILD = Path(__file__).with_name("group_close_race_child.py")
RACES = 40
# Each parked race lasts until its JoinGroup is sent (0.5 s in the child): fewer of them.
RACES_OF = {"parked": 5, "rejoin": 3}


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["poll", "commit", "parked", "rejoin"])
def test_close_racing_a_group_member_is_safe(broker: Any, kind: str) -> None:
    topic = f"group-close-race-{kind}"
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(topic, 2)
    with Producer(socket=broker.socket, transport="socket") as p:
        for i in range(20):
            p.send(topic, b"seed-%d" % i, partition=i % 2)
        p.flush()
    r = subprocess.run([sys.executable, str(CHILD), broker.socket, topic, str(RACES_OF.get(kind, RACES)), kind],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
