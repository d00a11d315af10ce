"""The teapot's pieces run by hand (examples/teapot/README.md) with a python3 that lacks their
packages (no venv active) say what to do in one line instead of a traceback; their --help shows
the whole first paragraph of their docstring. (Found by following the README as a user.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parents[2] / "examples" / "teapot"


@pytest.mark.parametrize("script,missing", [("teapot.py", "paho"),
                                            ("boil_detector.py", "edgebus")])
def test_without_the_venv_the_pieces_say_what_to_do(script: str, missing: str) -> None:
    # -S: no site-packages, as a system python3 without edgebus's packages would be.
    r = subprocess.run([sys.executable, "-S", str(HERE / script)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr, r.stderr
    assert f"No module named '{missing}'" in r.stderr and ".venv/bin/activate" in r.stderr


@pytest.mark.parametrize("script,tail", [("teapot.py", '("off" stops the heating).'),
                                         ("boil_detector.py", "(the bridge delivers it).")])
def test_help_shows_the_whole_description(script: str, tail: str) -> None:
    r = subprocess.run([sys.executable, str(HERE / script), "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert tail in " ".join(r.stdout.split()), r.stdout
