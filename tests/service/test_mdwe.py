"""MemoryDenyWriteExecute=yes in edgebus.service, checked for real: the supervisor and a client
round trip under the kernel's own W^X rule (prctl PR_SET_MDWE, Linux 6.3+), which refuses what
systemd's seccomp filter refuses: writable+executable mappings. A cffi ffi.callback or a ctypes
callback in the supervisor would break here before it breaks on a gateway."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.testing import EmbeddedBroker

pytestmark = pytest.mark.integration

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1

# Re-exec the supervisor under MDWE (the flag is inherited across execve).
LAUNCHER = f"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit(99)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""
# Under MDWE, after an execve: a writable+executable mapping must be refused.
WX_PROBE = ("import mmap, sys\n"
            "try: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
            "except OSError: sys.exit(0)\n"
            "sys.exit(3)")


def mdwe_supported() -> bool:
    """The kernel has PR_SET_MDWE and keeps it across execve (what the test relies on)."""
    r = subprocess.run([sys.executable, "-c", LAUNCHER, "-c", WX_PROBE], capture_output=True)
    return r.returncode == 0


class MdweBroker(EmbeddedBroker):
    def start(self, timeout: float = 30.0, env: dict[str, str] | None = None) -> EmbeddedBroker:
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the child)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, "-m", "edgebus.cli.main", "serve", "--config",
             str(self.config_path)],
            stdout=self._log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.wait_ready(timeout)
        return self


@pytest.mark.skipif(not hasattr(ctypes, "CDLL") or not mdwe_supported(),
                    reason="this kernel has no PR_SET_MDWE (Linux 6.3+)")
def test_supervisor_serves_under_memory_deny_write_execute(tmp_path):
    b = MdweBroker(tmp_path / "broker", config={"metrics": {"listen": "127.0.0.1:0"}})
    b.start()
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic("wx")
            status = a.status()
        with Producer(socket=b.socket, acks="durable") as p:
            assert p.send("wx", b"no W+X here").get(10).offset == 0
        with Consumer(socket=b.socket) as c:
            tp = TopicPartition("wx", 0)
            c.assign([tp])
            c.seek(tp, 0)
            got = []
            for _ in range(20):
                got += [r.value for rs in c.poll(timeout_ms=200).values() for r in rs]
                if got:
                    break
        assert got == [b"no W+X here"]
        assert status["disk"]["free"] > 0
        assert b.stop() == 0
    finally:
        b.cleanup()
