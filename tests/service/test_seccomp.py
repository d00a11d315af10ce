"""SystemCallFilter= of edgebus.service, checked for real: the supervisor runs under a seccomp
filter built from the same groups (@system-service minus @privileged and @resources, everything
else failing with EPERM as SystemCallErrorNumber=EPERM says) and serves socket and shared-memory
clients, consumer groups, status, metrics, its timers and a clean stop. A new system call in the
supervisor that the unit would refuse fails here first.

The filter is loaded by Debian's python3 with libseccomp's binding (package python3-seccomp,
installed by scripts/quickstart when it can), then the supervisor is exec'd under it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import edgebus
from edgebus import Admin, Consumer, Producer
from edgebus.testing import EmbeddedBroker

pytestmark = pytest.mark.integration

SYSTEM_PYTHON = "/usr/bin/python3"
LAUNCHER = r'''
import errno, os, subprocess, sys
import seccomp

def expand(group, seen):
    if group in seen:
        return set()
    seen.add(group)
    out = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True,
                         text=True, check=True).stdout
    calls = set()
    for line in out.splitlines()[1:]:
        line = line.strip()
        if line and not line.startswith("#"):
            calls |= expand(line, seen) if line.startswith("@") else {line}
    return calls

allowed = expand("@system-service", set()) - expand("@privileged", set()) - expand("@resources", set())
f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
for name in sorted(allowed):
    try:
        f.add_rule(seccomp.ALLOW, name)
    except (RuntimeError, ValueError):
        pass  # not a system call on this architecture
f.load()
os.execv(sys.argv[1], sys.argv[1:])
'''


def seccomp_available() -> bool:
    if shutil.which("systemd-analyze") is None or not os.path.exists(SYSTEM_PYTHON):
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True).returncode == 0


class FilteredBroker(EmbeddedBroker):
    def start(self, timeout: float = 30.0, env: dict[str, str] | None = None) -> EmbeddedBroker:
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the child)
        root = str(Path(edgebus.__file__).resolve().parents[1])  # the checkout, for PYTHONPATH
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, "-c", LAUNCHER, sys.executable, "-m", "edgebus.cli.main", "serve",
             "--config", str(self.config_path)],
            stdout=self._log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": root, **(env or {})})
        self.wait_ready(timeout)
        return self


@pytest.mark.skipif(not seccomp_available(),
                    reason="needs systemd-analyze and python3-seccomp for /usr/bin/python3")
def test_supervisor_works_under_the_units_system_call_filter(tmp_path):
    b = FilteredBroker(tmp_path / "broker", config={
        "metrics": {"listen": "127.0.0.1:0"},
        "log": {"checkpoint_interval_ms": 300, "retention_check_interval_ms": 300},
        "disk": {"check_interval_ms": 300},
    })
    b.start()
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic("s", partitions=2)
            assert a.status()["rss_bytes"] > 0
        for transport in ("socket", "shm"):
            with Producer(socket=b.socket, transport=transport, acks="durable") as p:
                futures = [p.send("s", b"v%d" % i) for i in range(300)]
                p.flush()
                for f in futures:
                    f.get(10)
            c = Consumer("s", socket=b.socket, transport=transport, group_id=f"g-{transport}",
                         auto_offset_reset="earliest")
            try:
                n = 0
                for _ in range(50):
                    n += sum(len(v) for v in c.poll(timeout_ms=200).values())
                    if n >= 300:
                        break
                c.commit()
            finally:
                c.close()
            assert n >= 300
        with urllib.request.urlopen(f"http://127.0.0.1:{b.metrics_port}/metrics", timeout=10) as r:
            assert b"edgebus_records_in_total 600.0" in r.read()
        time.sleep(1.0)  # checkpoint, retention and disk timers run under the filter too
        assert b.stop() == 0
        log = b.log()
        assert "Operation not permitted" not in log and "Traceback" not in log, log
    finally:
        b.cleanup()
