"""bench/trees.py: a case run against another checkout (`--base TREE`) imports that checkout's
edgebus and this checkout's bench, so that a benchmark module the other tree lacks
(bench/paced_pair.py, in any tree older than it) or has in another version is this checkout's.
A stand-in "older tree" with its own edgebus and bench packages, and real processes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bench import trees

pytestmark = pytest.mark.unit

THIS = Path(__file__).resolve().parents[1]

_WHICH = """
import json, os, edgebus, bench.clients, bench.paced_pair
print(json.dumps({"edgebus": getattr(edgebus, "TREE", "this"),
                  "clients": bench.clients.__file__, "paced_pair": bench.paced_pair.__file__,
                  "cwd": os.getcwd()}))
"""


def _old_tree(root: Path) -> Path:
    """A checkout whose edgebus says so, and whose bench/ has clients.py but no paced_pair.py."""
    (root / "edgebus").mkdir(parents=True)
    (root / "edgebus" / "__init__.py").write_text('TREE = "old"\n')
    (root / "bench").mkdir()
    (root / "bench" / "__init__.py").write_text("")
    (root / "bench" / "clients.py").write_text('raise ImportError("the old tree\'s bench")\n')
    return root


def test_a_case_in_another_tree_imports_its_edgebus_and_this_bench(tmp_path: Path) -> None:
    old = _old_tree(tmp_path / "old")
    script = tmp_path / "which.py"  # run by path, as the benchmarks run their --one cases
    script.write_text(_WHICH)
    row = trees.run_case(old, [sys.executable, str(script)])
    assert row["edgebus"] == "old"
    assert row["clients"] == str(THIS / "bench" / "clients.py")
    assert row["paced_pair"] == str(THIS / "bench" / "paced_pair.py")
    assert row["cwd"] == str(old)
    this = trees.run_case(THIS, [sys.executable, str(script)])
    assert this["edgebus"] == "this" and this["paced_pair"] == row["paced_pair"]


def test_the_link_to_the_other_edgebus_lasts_as_long_as_the_context(tmp_path: Path) -> None:
    old = _old_tree(tmp_path / "old")
    with trees.tree_env(old) as env:
        first, then = env["PYTHONPATH"].split(os.pathsep)
        assert (Path(first) / "edgebus").resolve() == old / "edgebus" and then == str(THIS)
        assert sorted(p.name for p in Path(first).iterdir()) == ["edgebus"]  # no bench there
    assert not Path(first).exists()
    with trees.tree_env(THIS) as env:
        assert env["PYTHONPATH"] == str(THIS)
