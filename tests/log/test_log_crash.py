"""kill -9 a real process in the middle of appending, then recover its data directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from logtest_helpers import read_all

from edgebus.log import LogManager

pytestmark = pytest.mark.crash

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    from edgebus.log import LogManager, TopicConfig
    from logtest_helpers import append
    m = LogManager({data!r})
    m.open()
    m.create_topic("t", TopicConfig(partitions=2, segment_bytes=4096, index_interval_bytes=256))
    n = 0
    while True:
        for p in m.all_partitions():
            append(p, [b"%d-%d" % (p.partition, n + i) for i in range(3)], int(time.time() * 1000))
        n += 3
        if n % 60 == 0:
            for p in m.all_partitions():
                t = p.begin_sync()
                if t is not None:
                    t.run()
                    p.complete_sync(t)
            m.write_checkpoint()
        if n % 300 == 0:
            print(n, flush=True)
    """
)


@pytest.mark.parametrize("kill_after", [300, 1200])
def test_kill9_while_appending_loses_nothing_written(tmp_path: Path, kill_after: int) -> None:
    data = tmp_path / "data"
    code = CHILD.format(root=str(ROOT), tests=str(ROOT / "tests" / "log"), data=str(data))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        seen = 0
        deadline = time.monotonic() + 60
        while seen < kill_after and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "child died"
            seen = int(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    m = LogManager(data)
    m.open()  # the kernel dropped the dead child's lock
    try:
        for p in m.all_partitions():
            assert p.log_end_offset >= seen
            assert p.recovery_report is not None and not p.recovery_report.full_scan
            got = read_all(p)
            assert [o for o, _ in got] == list(range(p.log_end_offset))
            assert [v for _, v in got] == [b"%d-%d" % (p.partition, i) for i in range(len(got))]
    finally:
        m.close()
