"""PrivateDevices=yes in the units gives the supervisor its own /dev and /dev/shm. That is safe
only because the shared-memory rings are memfds and eventfds passed over the Unix socket, never
objects named in /dev/shm: here the supervisor runs in its own mount namespace with a private
/dev/shm (what PrivateDevices= does), and clients outside it use the rings."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.testing import EmbeddedBroker

pytestmark = pytest.mark.integration

# A new mount namespace with a fresh tmpfs on /dev/shm, then the supervisor.
WRAP = 'mount -t tmpfs -o size=1m tmpfs /dev/shm && exec "$0" -m edgebus.cli.main serve --config "$1"'


def can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        "mount -t tmpfs tmpfs /dev/shm"], capture_output=True)
    return r.returncode == 0


class PrivateShmBroker(EmbeddedBroker):
    def start(self, timeout: float = 30.0, env: dict[str, str] | None = None) -> EmbeddedBroker:
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the child)
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", WRAP, sys.executable,
             str(self.config_path)], stdout=self._log_file, stderr=subprocess.STDOUT)
        self.wait_ready(timeout)
        return self


@pytest.mark.skipif(not can_unshare(), reason="needs root and unshare(1) for a mount namespace")
def test_shared_memory_clients_work_with_a_private_dev_shm(tmp_path):
    b = PrivateShmBroker(tmp_path / "broker").start()
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic("rings")
        with Producer(socket=b.socket, transport="shm", acks="durable") as p:
            metas = [p.send("rings", b"r%d" % i) for i in range(100)]
            p.flush()
            assert [m.get(10).offset for m in metas] == list(range(100))
        with Consumer(socket=b.socket, transport="shm") as c:
            tp = TopicPartition("rings", 0)
            c.assign([tp])
            c.seek(tp, 0)
            got: list[bytes] = []
            for _ in range(50):
                got += [bytes(r.value) for rs in c.poll(timeout_ms=200).values() for r in rs]
                if len(got) >= 100:
                    break
        assert got == [b"r%d" % i for i in range(100)]
        assert b.stop() == 0
    finally:
        b.cleanup()
