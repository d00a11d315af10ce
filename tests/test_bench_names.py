"""No module of bench/ is named as a standard-library module: several benchmarks run as scripts
(bench/request_inproc.py from another checkout, bench/consumer_calls.py and bench/wakeups.py with
--base), and a script's own directory comes first on sys.path, so bench/profile.py was imported
for `profile` by cProfile (`import cProfile` failed: "module 'profile' has no attribute 'run'")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_no_bench_module_shadows_the_standard_library() -> None:
    names = {p.stem for p in BENCH.glob("*.py")} | {p.name for p in BENCH.iterdir() if p.is_dir()}
    assert sorted(names & sys.stdlib_module_names) == []


def test_a_script_in_bench_can_import_cprofile() -> None:
    # As `python bench/request_inproc.py` runs: bench/ first on sys.path.
    r = subprocess.run([sys.executable, "-c", "import cProfile, sched; cProfile.Profile()"],
                       env={"PYTHONPATH": str(BENCH), "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
