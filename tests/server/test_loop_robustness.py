"""The supervisor loop: idle without a notifier, a response too large to encode.

Moved from tests/review/test_review_findings.py (the review that found these bugs); each test
failed on the code it was written against. Real supervisor processes; SIGSTOP/SIGCONT only orders
events deterministically (the kernel keeps queueing socket data meanwhile).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.server.rawclient import REPO, admin, cpu_seconds


# --- 11. Broker(notifier=None) busy-spins while idle ----------------------------------------------
@pytest.mark.integration
def test_broker_without_notifier_busy_spins_when_idle(tmp_path):
    """serve_forever starts next_watchdog at `now` and advances it only when a notifier exists:
    with Broker's default notifier=None the select timeout is 0 forever (100% CPU idle)."""
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from edgebus.log.manager import LogManager
        from edgebus.server.broker import Broker
        logs = LogManager(Path(sys.argv[1])); logs.open()
        b = Broker(logs, Path(sys.argv[2])); b.listen()
        print("ready", flush=True)
        b.serve_forever()
    """)
    sock = Path(f"/tmp/eb-review-{os.getpid()}.sock")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "data"), str(sock)],
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.3)
        used = cpu_seconds(proc.pid, 1.0)
        assert used < 0.2, f"idle supervisor loop used {used:.2f} s of CPU in 1 s"
    finally:
        proc.terminate()
        proc.wait(10)
        sock.unlink(missing_ok=True)


# --- 12. a response that cannot be encoded kills the supervisor -----------------------------------
@pytest.mark.integration
def test_status_of_a_700_partition_topic_kills_supervisor(broker):
    """Broker._dispatch encodes the handler's result outside its try: StatusResponse.json is a
    u16-length STR, so a status document above 64 KiB (here one topic of 700 partitions, within
    MAX_PARTITIONS=1024) raises ValueError out of serve_forever and the supervisor exits."""
    with admin(broker) as a:
        a.create_topic("wide", 700)
    with admin(broker) as a, contextlib.suppress(Exception):
        a.status()  # BrokerUnavailableError: the supervisor closed the connection (it died)
    time.sleep(0.5)
    assert broker.proc.poll() is None, "`edgebus status` killed the supervisor:\n" + broker.log()[-600:]
