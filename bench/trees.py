"""A benchmark's case run against another checkout's edgebus (`--base TREE`): bench.wakeups and
bench.consumer_calls start this checkout's script in a process of its own with PYTHONPATH=TREE
(the case prints its row as JSON, last line), and name each tree with its commit."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any


def commit(tree: Path | str) -> str:
    """`git describe --always --dirty` of a checkout ("?" outside git)."""
    r = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=tree, capture_output=True,
                       text=True, check=False)
    return r.stdout.strip() or "?"


def run_case(tree: Path, cmd: list[str], timeout: float = 600) -> dict[str, Any]:
    """Run `cmd` from `tree` with PYTHONPATH=tree (so that tree's edgebus is the one imported,
    its supervisor too) and return the JSON object its last line of output holds."""
    r = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree,
                       capture_output=True, text=True, timeout=timeout, check=False)
    if r.returncode:
        raise RuntimeError(f"case failed in {tree}: {r.stderr[-2000:]}")
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))
