"""bench.wakeups counts system calls per thread (perf stat --per-thread): a real process with two
threads making getpid() calls, attached by the benchmark's own perf command and parsed by its
parser; the calls are split between the two threads, and the threads' counts add up to the
process's."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.wakeups import _perf, _perf_counts

pytestmark = pytest.mark.integration

_CHILD = """
import os, sys, threading
stop = threading.Event()
def spin():
    while not stop.is_set():
        os.getpid()
t = threading.Thread(target=spin)
t.start()
print(t.native_id, flush=True)
sys.stdin.readline()
stop.set()
t.join()
print("done", flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif(shutil.which("perf") is None, reason="perf is not installed")
def test_system_calls_are_counted_per_thread(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    out = tmp_path / "perf.txt"
    try:
        assert child.stdout is not None and child.stdin is not None
        worker = int(child.stdout.readline())
        tracer = _perf(child.pid, str(out))
        time.sleep(1.0)  # attached (as bench.wakeups waits); the worker keeps calling meanwhile
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        tracer.send_signal(signal.SIGINT)
        assert tracer.wait(30) is not None
        counts, per = _perf_counts(str(out))
    finally:
        child.kill()
        child.wait(10)
    if not counts:
        pytest.skip("perf could not attach to the syscall tracepoints here")
    assert per.get(worker, {}).get("getpid", 0) > 100, per
    assert counts["getpid"] == sum(c.get("getpid", 0) for c in per.values())
    assert counts["all"] == sum(c.get("all", 0) for c in per.values())
    assert per.get(child.pid, {}).get("all", 0) > 0, per  # the main thread's own calls (read)
    assert per[child.pid].get("getpid", 0) < per[worker]["getpid"]  # told apart from the worker
