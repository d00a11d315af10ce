"""Every package edgebus and its bridges import is one that `pip install edgebus` installs: a
runtime dependency in pyproject.toml, or the `kafka` extra for the replicator's Kafka target
(imported only when such a target is configured). psutil, which tests and benchmarks use, is
neither: edgebus reads /proc itself (edgebus/procmetrics.py)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
# Names seen only by the type checker (under TYPE_CHECKING), never imported at run time.
TYPING_ONLY = {"_typeshed"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> the files importing it (anywhere in the file, lazy imports too)."""
    found: dict[str, set[str]] = {}
    for f in sorted([*ROOT.glob("edgebus/**/*.py"), *ROOT.glob("bridges/**/*.py")]):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names}:
                if top not in sys.stdlib_module_names and top not in ("edgebus", "bridges"):
                    found.setdefault(top, set()).add(str(f.relative_to(ROOT)))
    return found


def test_every_import_is_an_installed_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    allowed = {_name(r) for r in [*project["dependencies"],
                                  *project["optional-dependencies"]["kafka"]]}
    dists = packages_distributions()
    imports = _third_party_imports()
    assert "yaml" in imports and "paho" in imports  # the scan sees imports at all
    undeclared = {
        top: sorted(files) for top, files in imports.items()
        if top not in TYPING_ONLY and top != "_cffi_backend"  # cffi's own C module
        and not {_name(d) for d in dists.get(top, [])} & allowed
    }
    assert undeclared == {}, "imported by edgebus/bridges but not a runtime dependency"
    assert "psutil" not in {_name(r) for r in project["dependencies"]}
