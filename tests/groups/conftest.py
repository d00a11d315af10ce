"""Fixtures and helpers for the consumer-group tests: a real supervisor, real member processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgebus import Admin, testing
from edgebus.errors import UnknownGroupError
from edgebus.server.groups.coordinator import Coordinator
from edgebus.testing import EmbeddedBroker
from tests.groups.coordinator_helpers import Clock

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def broker_config() -> dict[str, Any]:
    """The `broker` fixture (tests/conftest.py) flushes often: commits become durable quickly."""
    return {"log": {"flush_interval_ms": 100}}


@pytest.fixture
def clock() -> Clock:
    """The coordinator tests' clock (coordinator_helpers.py): moved by the test only."""
    return Clock()


@pytest.fixture
def partition_counts() -> dict[str, int]:
    """Partitions of each topic the `coord` fixture knows (a test file may override this)."""
    return {"t": 4}


@pytest.fixture
def coord(clock: Clock, partition_counts: dict[str, int]) -> Coordinator:
    """A coordinator driven without sockets (coordinator_helpers.py)."""
    return Coordinator(lambda t: partition_counts.get(t, 0), clock=clock)


@pytest.fixture
def admin(broker: EmbeddedBroker) -> Iterator[Admin]:
    with Admin(socket=broker.socket) as a:
        yield a


def wait_for(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    return testing.wait_for(cond, timeout, what, interval=step)


@dataclass
class Events:
    assigned: list[tuple[float, int, dict[tuple[str, int], int]]] = field(default_factory=list)
    processed: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset) in order
    closed: bool = False


@dataclass
class MemberProc:
    name: str
    proc: subprocess.Popen[bytes]
    out: Path
    stop: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self) -> Events:
        ev = Events()
        try:
            text = self.out.read_text()
        except FileNotFoundError:
            return ev
        lines = text.split("\n")
        for line in lines[:-1]:  # the last piece is "" or a torn line
            f = line.split()
            if f[0] == "P":
                ev.processed.append((int(f[1]), int(f[2])))
            elif f[0] == "A":
                starts = {}
                for item in f[3:]:
                    t, p, pos = item.rsplit(":", 2)
                    starts[(t, int(p))] = int(pos)
                ev.assigned.append((float(f[1]), int(f[2]), starts))
            elif f[0] == "X":
                ev.closed = True
        return ev

    def kill(self, sig: int = signal.SIGKILL) -> None:
        os.kill(self.proc.pid, sig)

    def finish(self, timeout: float = 20) -> int:
        self.stop.touch()
        return self.proc.wait(timeout)


@pytest.fixture
def members(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Callable[..., MemberProc]]:
    started: list[MemberProc] = []

    def start(name: str, topic: str, group: str, **opts: Any) -> MemberProc:
        out, stop = tmp_path / f"{name}.log", tmp_path / f"{name}.stop"
        args = {"socket": broker.socket, "topic": topic, "group": group, "out": str(out),
                "stop": str(stop), "client_id": name, **opts}
        proc = subprocess.Popen([sys.executable, "-m", "tests.groups.member", "member",
                                 json.dumps(args)], cwd=ROOT)
        m = MemberProc(name, proc, out, stop)
        started.append(m)
        return m

    yield start
    for m in started:
        if m.proc.poll() is None:
            m.proc.kill()
            m.proc.wait()


def start_producer(broker: EmbeddedBroker, topic: str, tag: str, count: int,
                   rate: int) -> subprocess.Popen[bytes]:
    args = {"socket": broker.socket, "topic": topic, "tag": tag, "count": count, "rate": rate}
    return subprocess.Popen([sys.executable, "-m", "tests.groups.member", "producer",
                             json.dumps(args)], cwd=ROOT, stdout=subprocess.PIPE)


def owners(admin: Admin, group: str) -> dict[int, list[tuple[str, int]]]:
    """pid -> assigned partitions, when the group is Stable; {} otherwise."""
    try:
        d = admin.describe_group(group)
    except UnknownGroupError:
        return {}
    if d.state != "Stable":
        return {}
    return {m.pid: sorted((a.topic, p) for a in m.assignment for p in a.partitions)
            for m in d.members}
