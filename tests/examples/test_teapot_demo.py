"""`python3 examples/teapot/demo.py` as a new user runs it (issue 14, item 12): from a python3 that
lacks edgebus's dependencies (no activated venv), and with a child that dies at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "teapot" / "demo.py"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def bare_python(script: Path, env: dict[str, str] | None = None, timeout: float = 180
                ) -> subprocess.CompletedProcess[str]:
    """`python3 script` from an interpreter without site-packages (-S): none of edgebus's
    dependencies import, as with a system python3 and no activated venv."""
    environ = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run([sys.executable, "-S", str(script)], env={**environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.skipif(not VENV_PYTHON.exists(), reason="needs the checkout's .venv (quickstart)")
def test_a_child_that_dies_is_reported_at_once_with_its_last_lines():
    # A bad knob makes the supervisor exit at start. Before, the demo waited 30 s and said
    # only "timed out waiting for the edgebus supervisor".
    r = bare_python(DEMO, env={"EDGEBUS_SHM_SPIN_US": "bogus"})
    assert r.returncode == 1
    assert f"running with {VENV_PYTHON}" in r.stderr
    # A bad EDGEBUS_* value is a configuration error: exit 78 (EX_CONFIG, issue 14 item 7).
    assert "demo: edgebus exited with status 78; its last lines:" in r.stderr
    assert "EDGEBUS_SHM_SPIN_US must be a whole number" in r.stderr
    assert "timed out" not in r.stderr


def test_without_a_venv_it_says_what_to_do(tmp_path):
    copy = tmp_path / "examples" / "teapot" / "demo.py"  # a checkout without .venv
    copy.parent.mkdir(parents=True)
    shutil.copy(DEMO, copy)
    r = bare_python(copy)
    assert r.returncode == 1
    assert "lacks pyyaml, paho-mqtt" in r.stderr
    assert f"{tmp_path}/scripts/quickstart setup" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(not VENV_PYTHON.exists(), reason="needs the checkout's .venv (quickstart)")
@pytest.mark.skipif(not (shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto")),
                    reason="mosquitto is not installed")
def test_the_demo_runs_from_a_bare_python3():
    r = bare_python(DEMO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the teapot switched off. OK" in r.stdout
