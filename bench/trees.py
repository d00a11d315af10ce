"""A benchmark's case run against another checkout's edgebus (`--base TREE`): bench.wakeups,
bench.park_returns, bench.consumer_calls and bench.consumer_wakes start this checkout's script in
a process of its own (the case prints its row as JSON, last line), and name each tree with its
commit.

What the case's process imports: TREE's `edgebus` (its supervisor too: EmbeddedBroker starts it
with the same environment), and this checkout's `bench`, so that both trees of an A/B are measured
by the same benchmark code and a benchmark module TREE lacks or has in an older version
(bench/paced_pair.py) does not matter. Both packages sit side by side at a checkout's top, so
PYTHONPATH names a folder holding only a link to TREE's edgebus/, then this checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

THIS = Path(__file__).resolve().parents[1]


def commit(tree: Path | str) -> str:
    """`git describe --always --dirty` of a checkout ("?" outside git)."""
    r = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=tree, capture_output=True,
                       text=True, check=False)
    return r.stdout.strip() or "?"


@contextmanager
def tree_env(tree: Path | str) -> Iterator[dict[str, str]]:
    """The environment of a process that is to import `tree`'s edgebus and this checkout's bench
    (above); the folder it names lasts as long as the context."""
    tree = Path(tree).resolve()
    if tree == THIS:
        yield {**os.environ, "PYTHONPATH": str(THIS)}
        return
    d = tempfile.mkdtemp(prefix="bench-tree-")
    try:
        os.symlink(tree / "edgebus", Path(d) / "edgebus")
        yield {**os.environ, "PYTHONPATH": os.pathsep.join((d, str(THIS)))}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_case(tree: Path, cmd: list[str], timeout: float = 600) -> dict[str, Any]:
    """Run `cmd` from `tree` with `tree_env(tree)` (that tree's edgebus is the one imported, its
    supervisor's too) and return the JSON object its last line of output holds."""
    with tree_env(tree) as env:
        r = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True,
                           timeout=timeout, check=False)
    if r.returncode:
        raise RuntimeError(f"case failed in {tree}: {r.stderr[-2000:]}")
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))
