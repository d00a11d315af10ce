"""`edgebus produce` filling a real small filesystem (a 4 MiB tmpfs the test mounts): the user
is told how many of the lines were produced and which line was the first that was not, and that
is the truth (the topic holds exactly those lines), so the input can be resumed from there.
(Found by following the README as a user: only the DiskFullError was printed, nothing said
how far the input had got.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgebus import Admin, Consumer, TopicPartition

from .test_disk import broker_on

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_produce_on_a_full_disk_says_which_lines_made_it(small_fs: Path, tmp_path: Path) -> None:
    b = broker_on(small_fs, tmp_path, {"low_watermark": "1MiB", "high_watermark": "2MiB"})
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic("fill", config={"segment_bytes": 256 * 1024})
        lines = b"".join(b"%06d " % i + b"x" * 993 + b"\n" for i in range(1, 8001))  # ~8 MB
        r = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "produce", "fill",
                            "--socket", b.socket], input=lines, capture_output=True,
                           timeout=120, cwd=ROOT)
        err = r.stderr.decode()
        assert r.returncode == 1, err
        m = re.search(r"^produced (\d+) of (\d+) records sent to fill; line (\d+) was the first "
                      r"not produced$", err, re.M)
        assert m, err
        acked, sent, first = map(int, m.groups())
        assert 0 < acked < sent <= 8000 and first == acked + 1, err
        assert "edgebus: error: disk space low" in err, err
        with Consumer(socket=b.socket, auto_offset_reset="earliest",
                      consumer_timeout_ms=2000) as c:
            c.assign([TopicPartition("fill", 0)])
            got = [r.value[:6] for r in c]
        assert got == [b"%06d" % i for i in range(1, first)]
    finally:
        b.cleanup()
