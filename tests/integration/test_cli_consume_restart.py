"""`edgebus consume` (a tail: no --max, no -e) outlives a restart of the supervisor, as kcat
outlives a broker restart: it says it lost the supervisor, reconnects, and goes on printing from
where it was, in a group and on its own. (Found by following the README as a user: the tail
ended with "lost the connection" at the first `systemctl restart`.) The real CLI against a real
supervisor, restarted with SIGTERM and with SIGKILL."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgebus import Admin, Producer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class Tail:
    """The CLI in the background, its stdout lines collected by a thread."""

    def __init__(self, sock: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgebus.cli.main", "consume", "t", "--socket", sock,
             "--format", "%s\\n", "--from-beginning", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=ROOT)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def wait_for(self, value: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while value not in self.lines:
            assert self.proc.poll() is None, f"the tail ended: {self.stop()}"
            assert time.monotonic() < deadline, f"no {value!r} in {self.lines}"
            time.sleep(0.05)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        return err


def send(sock: str, value: bytes) -> None:
    with Producer(socket=sock, acks="durable") as p:
        p.send("t", value, partition=0).get(10)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_tail_outlives_a_supervisor_restart(broker, how: str) -> None:
    with Admin(socket=broker.socket) as a:
        a.create_topic("t", partitions=1)
    tails = [Tail(broker.socket), Tail(broker.socket, "--group", "tails")]
    try:
        send(broker.socket, b"before")
        for t in tails:
            t.wait_for("before")
        if how == "sigkill":
            broker.kill9()
            broker.start()
        else:
            broker.restart()
        send(broker.socket, b"after")
        for t in tails:
            t.wait_for("after")
            assert t.lines == ["before", "after"]  # nothing twice, nothing skipped
    finally:
        errs = [t.stop() for t in tails]
    for err in errs:
        assert "reconnecting (Ctrl-C stops)" in err and "edgebus consume: reconnected" in err, err
