"""bench/consumer_calls.py counts a real consumer's calls per poll and writes its report; the
counts also hold the consumer's quick poll (issue 16) to its size: one record's poll costs about
20 Python calls on either transport (52 on shm, 48 on the socket before it), so a change that
puts the general path's layers back on the common poll fails here. Counts, not time: the machine's
load does not move them (a slow run only gathers more records per poll, a call each)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import consumer_calls

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_a_poll_of_one_record_costs_few_python_calls(transport: str) -> None:
    row = consumer_calls.one(transport, 300, 1.0, 0)
    assert row["records"] >= 300 and row["polls"] > 0
    # Each record beyond one per poll adds its Record's __init__ (one call).
    budget = 26 + 2 * (row["records_per_poll"] - 1)
    assert row["calls_per_poll"] <= budget, row


def test_report(tmp_path: Path) -> None:
    out = tmp_path / "calls.md"
    consumer_calls.main(["--rate", "300", "--duration", "0.5", "--transports", "shm",
                         "--out", str(out)])
    text = out.read_text()
    assert "| this | shm |" in text and "Python calls / poll" in text


TREE = Path(__file__).resolve().parents[1]


def _alone(args: list[str], cwd: Path) -> dict[str, Any]:
    """The bench run by hand: no PYTHONPATH (bench/trees.run_case sets one for its cases)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    row: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return row


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_instructions_of_one_transport_run_alone() -> None:
    """`python -m bench.consumer_calls --one socket --instructions` from the tree, with no
    PYTHONPATH: its consumer under callgrind runs this file as a script, which found no `bench`
    package and died unseen while the bench sent warm-up records forever (now it finds the
    tree, and a child that dies is reported with its errors)."""
    row = _alone(["-m", "bench.consumer_calls", "--one", "socket", "--instructions", "--rate",
                  "50", "--records", "20"], TREE)
    assert row["records"] == 20 and row["polls"] >= 1 and row["per_record"] > 0, row


def test_the_file_run_as_a_script(tmp_path: Path) -> None:
    """The file run by path from elsewhere (as the callgrind child is) finds its tree."""
    row = _alone([str(TREE / "bench" / "consumer_calls.py"), "--one", "socket", "--rate", "100",
                  "--duration", "0.5"], tmp_path)
    assert row["records"] >= 50 and row["polls"] > 0, row
