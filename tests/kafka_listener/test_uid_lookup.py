"""A loopback Kafka client's uid (the owner of its end in /proc/net/tcp) is looked up only when
something needs it: not at every accept while no user can be at limits.max_connections_per_uid
(the loop holds fewer connections than that) and access control is off. Once the loop holds that
many, the connections accepted before are counted under their users too, so the limit still
counts every Kafka connection (tests/security/test_connection_limits.py: another user's, at its
limit). The supervisor's reads of the table are watched with strace."""

from __future__ import annotations

import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kio.schema.api_versions.v3.request import ApiVersionsRequest

from edgebus import Admin
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import connect, raw_request, read_frame

pytestmark = pytest.mark.integration


@contextmanager
def opened_files(pid: int, out: Path) -> Iterator[list[str]]:
    """The paths process `pid` (all its threads) opens inside the block, as strace sees them."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (scripts/quickstart setup test installs it)")
    proc = subprocess.Popen([strace, "-f", "-qq", "-e", "trace=openat", "-o", str(out),
                             "-p", str(pid)], stderr=subprocess.PIPE, text=True)
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until every thread is traced
            if all(_tracer(t) != 0 for t in tasks) or proc.poll() is not None:
                break
            time.sleep(0.01)
        if proc.poll() is not None:
            pytest.skip(f"strace cannot attach here: {proc.stderr.read() if proc.stderr else ''}")
        paths: list[str] = []
        yield paths
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    paths += [line.split('"')[1] for line in out.read_text().splitlines() if '"' in line]


def _tracer(task: Path) -> int:
    try:
        for line in (task / "status").read_text().splitlines():
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    except FileNotFoundError:
        return 1  # a thread that ended needs no tracing
    return 0


def served(s: socket.socket, corr: int) -> None:
    """One ApiVersions round trip: the supervisor has accepted and served this connection."""
    s.sendall(raw_request(18, 3, corr, ApiVersionsRequest(client_software_name="t",
                                                          client_software_version="1")))
    assert read_frame(s)[:4] == struct.pack(">i", corr)


def test_table_read_only_when_a_user_could_be_at_its_limit(
        make_broker: Callable[..., EmbeddedBroker], tmp_path: Path) -> None:
    b = make_broker({"limits": {"max_connections_per_uid": 3}}).start()
    assert b.proc is not None
    held: list[socket.socket] = []
    try:
        with opened_files(b.proc.pid, tmp_path / "a.strace") as paths:
            for i in range(2):  # this test's user (the uid of both ends here) has 2 of 3
                held.append(connect(b))
                served(held[-1], i + 1)
        assert not [p for p in paths if p.startswith("/proc/net/tcp")], paths
        with Admin(socket=b.socket) as admin:  # the same user's third, native connection
            admin.list_topics()
            # The loop now holds 3 connections: a user may be at its limit. The 2 Kafka
            # connections are counted under their user, and the fourth is refused.
            with opened_files(b.proc.pid, tmp_path / "b.strace") as paths, connect(b) as s:
                assert read_frame(s) == b"", "closed at once: over the user's limit"
            assert [p for p in paths if p.startswith("/proc/net/tcp")], paths
            assert admin.status()["limits"]["refused_connections"]["max_connections_per_uid"] == 1
        assert "has 3 connections, the limit for one user" in b.log()
    finally:
        for s in held:
            s.close()
