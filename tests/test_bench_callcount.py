"""bench/callcount.py (issue 16: the supervisor's calls per wake-up): a real Python process run
under it counts the calls of its main thread between the start and stop marks only, each mark
looked at when the process waits in epoll."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

MODULE = '''
import pathlib, select, sys

def counted():
    pass

out = sys.argv[1]
ep = select.epoll()
counted()  # before the start mark: not counted
pathlib.Path(out + ".start").touch()
ep.poll(0)  # the mark is seen here: counting starts
for _ in range(3):
    counted()
pathlib.Path(out + ".stop").touch()
ep.poll(0)  # and stops here
counted()
'''


@pytest.mark.unit
def test_calls_are_counted_between_the_marks(tmp_path: Path) -> None:
    (tmp_path / "cc_target.py").write_text(MODULE)
    out = str(tmp_path / "calls.json")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    subprocess.run([sys.executable, str(BENCH / "callcount.py"), out, sys.executable, "-m",
                    "cc_target", out], env=env, check=True, timeout=60)
    calls = json.loads(Path(out).read_text())["calls"]
    assert calls["cc_target.py:counted"] == 3
    assert calls["epoll:epoll.poll"] == 1  # the wait that started counting; not the one that ended it
