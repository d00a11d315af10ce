"""Issue 11 item 5: `edgebus status` (and --json) shows every link of every replicator without
being told where a replicator is: each replicator process leaves its status next to the
supervisor's socket (edgebus/replicator_status.py). A replicator killed with SIGKILL is shown as
stale, never as up; one stopped cleanly is gone from the list."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from edgebus import Admin

from .conftest import wait_for
from .test_conformance import in_step, produce

pytestmark = pytest.mark.integration


def edgebus_status(socket: str, *extra: str) -> str:
    out = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "status", "--socket", socket,
                          *extra], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def replicators(socket: str) -> list[dict[str, Any]]:
    return list(json.loads(edgebus_status(socket, "--json"))["replicators"])


@pytest.mark.parametrize("destination", ["peer"], indirect=True)
def test_edgebus_status_shows_the_links_of_a_running_replicator_and_marks_a_killed_one(
        source, destination, make_replicator) -> None:
    with Admin(socket=source.socket) as a:
        a.create_topic("seen", 2)
    produce(source, "seen", 30)
    rep = make_replicator(["seen"]).start()
    wait_for(lambda: in_step(source, destination, "seen", 2), what="the mirror")

    def shipped() -> bool:
        docs = replicators(source.socket)
        return len(docs) == 1 and docs[0]["links"]["l1"]["state"] == "up" and \
            sum(p["shipped_records"] for p in docs[0]["links"]["l1"]["partitions"]) == 30

    wait_for(shipped, what=f"the link in `edgebus status --json`:\n{rep.log()[-2000:]}")
    [doc] = replicators(source.socket)
    assert doc["stale"] == "" and doc["pid"] == rep.proc.pid and doc["node"]
    parts = {(p["topic"], p["partition"]): p for p in doc["links"]["l1"]["partitions"]}
    assert set(parts) == {("seen", 0), ("seen", 1)}
    assert all(p["lag_records"] == 0 and p["lag_seconds"] == 0.0 for p in parts.values())
    assert sum(p["target_end"] for p in parts.values()) == 30
    text = edgebus_status(source.socket)
    row = next(ln for ln in text.splitlines() if "l1 -> peer" in ln and "seen-0" in ln)
    assert " up " in f"{row} " and "STALE" not in row, text

    pid = rep.proc.pid
    rep.kill9()  # no chance to tidy up: its file stays, and must not read as up
    [doc] = replicators(source.socket)
    assert doc["stale"].startswith(f"process {pid} is gone"), doc["stale"]
    assert "STALE: process" in edgebus_status(source.socket)

    rep.start()  # its successor removes the dead one's entry; a clean stop removes its own
    wait_for(lambda: [d["pid"] for d in replicators(source.socket)] == [rep.proc.pid],
             what=f"only the new replicator's status:\n{rep.log()[-2000:]}")
    assert "removed the status file of a replicator that died" in rep.log()
    rep.stop()
    assert replicators(source.socket) == []
    assert "REPLICATOR" not in edgebus_status(source.socket)
