"""`edgebus consume` (a tail: no --max, no -e) and a `for record in consumer:` loop outlive a
restart of the supervisor, as kcat and kafka-python's iterator outlive a broker restart: they
say they lost the supervisor, reconnect, and go on from where they were, in a group and on
their own. (Found by following the README as a user: the tail
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

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
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


def cli(sock: str, *args: str) -> Tail:
    return Tail([sys.executable, "-m", "edgebus.cli.main", "consume", "t", "--socket", sock,
                 "--format", "%s\\n", "--from-beginning", *args])


# The README's group loop: `for record in consumer:` (the Python API, not the CLI).
ITERATE = """
import sys
from edgebus import Consumer
consumer = Consumer("t", group_id="loop", auto_offset_reset="earliest", socket=sys.argv[1])
for record in consumer:
    print(record.value.decode(), flush=True)
"""


def send(sock: str, value: bytes) -> None:
    with Producer(socket=sock, acks="durable") as p:
        p.send("t", value, partition=0).get(10)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_tail_outlives_a_supervisor_restart(broker, how: str) -> None:
    with Admin(socket=broker.socket) as a:
        a.create_topic("t", partitions=1)
    tails = [cli(broker.socket), cli(broker.socket, "--group", "tails"),
             Tail([sys.executable, "-c", ITERATE, broker.socket])]
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
        assert tails[0].lines == ["before", "after"]  # on its own: from its position, exactly
        for t in tails[1:]:
            # A group member resumes from its last commit (auto-commit every 5 s), so "before"
            # may come again (at least once, INVARIANTS.md 15); nothing is skipped.
            assert t.lines[-1] == "after" and set(t.lines) == {"before", "after"}, t.lines
    finally:
        errs = [t.stop() for t in tails]
    for err in errs[:2]:
        assert "reconnecting (Ctrl-C stops)" in err and "edgebus consume: reconnected" in err, err
    assert "retrying" in errs[2], errs[2]  # the iterator's one WARNING line
