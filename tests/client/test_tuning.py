"""edgebus/tuning.py: every knob is in README's table, and a bad value names its variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edgebus import tuning


def test_every_knob_is_in_the_readme_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [k.name for k in tuning.KNOBS if f"`{k.name}`" not in readme]
    assert not missing


def test_a_bad_value_is_an_error_naming_the_variable() -> None:
    r = subprocess.run([sys.executable, "-c", "import edgebus.tuning"], capture_output=True,
                       text=True, env={"EDGEBUS_SHM_SPIN_US": "fast", "PATH": ""})
    assert r.returncode != 0 and "EDGEBUS_SHM_SPIN_US must be a whole number" in r.stderr
