"""The supervisor under a test that plays systemd: a real datagram socket as NOTIFY_SOCKET.

READY=1 only after recovery of a pre-filled data directory and once the socket listens, WATCHDOG=1
from the event loop (and none while the loop is blocked), STATUS= lines, STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from edgebus import Admin, Producer
from edgebus.testing import EmbeddedBroker, wait_for

from .conftest import NotifySocket

pytestmark = pytest.mark.integration

WATCHDOG_USEC = 1_000_000  # pings every 0.5 s
BLOCK_S = 3.0


def prefill(root: Path) -> EmbeddedBroker:
    """A data directory whose unsynced tail recovery must scan: records written, the recovery
    checkpoint never advanced (a long interval), then SIGKILL."""
    b = EmbeddedBroker(root, config={"log": {"checkpoint_interval_ms": "1h"}})
    b.start()
    with Admin(socket=b.socket) as admin:
        admin.create_topic("readings", partitions=2)
    with Producer(socket=b.socket, acks="written") as p:
        for i in range(3000):
            p.send("readings", b"reading %06d" % i)
        p.flush()
    b.kill9()
    return b


def test_ready_after_recovery_watchdog_status_block_and_stopping(tmp_path, notify_socket):
    b = prefill(tmp_path / "broker")
    log_start = b.log_path.stat().st_size

    def at_ready() -> dict[str, object]:
        # Runs the instant READY=1 arrives: recovery must be logged and clients must connect.
        with open(b.log_path, "rb") as f:
            f.seek(log_start)
            text = f.read().decode(errors="replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(b.socket)
            connected = True
        except OSError:
            connected = False
        return {"log": text, "connected": connected}

    notify_socket.on_ready = at_ready
    env = {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": str(WATCHDOG_USEC),
           "EDGEBUS_TEST_HOOKS": "1", "EDGEBUS_TEST_BLOCK_S": str(BLOCK_S)}
    try:
        b.start(env=env)
        t_ready = notify_socket.wait_for("READY=1")

        # READY=1 came after recovery (its log line was written, and it scanned the tail) and
        # after listen (a client could connect at that very moment).
        seen = notify_socket.ready_result
        assert isinstance(seen, dict)
        m = re.search(r"opened .*: \d+ topic\(s\), \d+ partition\(s\), scanned (\d+) bytes", seen["log"])
        assert m, seen["log"]
        assert int(m.group(1)) > 0, "the pre-filled tail should have been scanned"
        assert seen["connected"] is True
        statuses_before = [m for t, m in notify_socket.lines("STATUS=") if t <= t_ready]
        assert any("recovering" in s for s in statuses_before)
        assert len(notify_socket.lines("READY=1")) == 1
        assert notify_socket.lines(f"MAINPID={b.pid}")

        # Periodic WATCHDOG=1 from the loop, none before READY; STATUS= with a summary. The
        # period itself (half of WATCHDOG_USEC) is test_service_unit's: bounds on the gaps
        # between pings as they arrive here failed on a loaded machine (a supervisor starved
        # for 1.3 s shows a 1.3 s gap), so this test reads order and counts only.
        wait_for(lambda: len(notify_socket.lines("WATCHDOG=1")) >= 4, 30, "four pings")
        assert min(t for t, _ in notify_socket.lines("WATCHDOG=1")) >= t_ready
        assert any("2 partitions" in m and "clients" in m
                   for _, m in notify_socket.lines("STATUS="))

        # A blocked event loop sends no ping: systemd (WatchdogSec=1s here) would kill it. The
        # hook says on the notify socket when the block begins and ends, from the loop's thread,
        # so the pings are placed by the order the datagrams arrived in, not by their times.
        assert b.pid is not None
        os.kill(b.pid, signal.SIGUSR2)
        begun, ended = "STATUS=test hook: blocking the event loop", \
            "STATUS=test hook: the event loop runs again"
        wait_for(lambda: _after(notify_socket, ended).count("WATCHDOG=1") >= 1, BLOCK_S + 30,
                 "pings to resume after the block")
        blocked = _after(notify_socket, begun)
        blocked = blocked[:blocked.index(ended)]
        assert "WATCHDOG=1" not in blocked, f"pings continued while the loop was blocked: {blocked}"
        assert "WATCHDOG=1" in _before(notify_socket, begun), "no ping before the block"
        assert "test hook: blocking the event loop" in b.log()

        # SIGTERM: STOPPING=1, then a clean exit.
        t_term = time.monotonic()
        assert b.stop() == 0
        notify_socket.wait_for("STOPPING=1", timeout=5, after=t_term)
        assert "stopped cleanly" in b.log()
    finally:
        b.cleanup()


def _after(n: NotifySocket, line: str) -> list[str]:
    """The lines that arrived after the first `line` (all of them: [] if it has not come)."""
    got = [m for _, m in n.lines()]
    return got[got.index(line) + 1:] if line in got else []


def _before(n: NotifySocket, line: str) -> list[str]:
    got = [m for _, m in n.lines()]
    return got[:got.index(line)]


def test_no_notify_socket_means_no_notifications(tmp_path, notify_socket, monkeypatch):
    """Without NOTIFY_SOCKET nothing is sent, even with WATCHDOG_USEC set, and the test hook
    stays off: SIGUSR2 keeps its default action (the process dies)."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("EDGEBUS_TEST_HOOKS", raising=False)
    b = EmbeddedBroker(tmp_path / "broker")
    try:
        b.start(env={"WATCHDOG_USEC": str(WATCHDOG_USEC)})
        time.sleep(1.2)
        assert notify_socket.lines() == []
        assert "test hooks are enabled" not in b.log()
        assert b.proc is not None
        os.kill(b.pid, signal.SIGUSR2)  # type: ignore[arg-type]
        assert b.proc.wait(10) == -signal.SIGUSR2
    finally:
        b.cleanup()
