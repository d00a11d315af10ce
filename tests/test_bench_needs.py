"""`python -m bench` names what the full comparison needs and is not installed (the rows each
costs) and the one command that installs it all: `./scripts/quickstart setup` installs the test
extra only, so a first run used to leave rows out with a note at the end of the report naming
only the first missing piece. Real runs of `python -m bench --check` with a PATH that lacks a
peer's program, and the quickstart that the advice names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def check(*args: str, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", "--check", *args], cwd=ROOT,
                          env={**os.environ, "PATH": path}, capture_output=True, text=True,
                          timeout=60, check=False)


def test_a_missing_program_is_named_with_its_rows_and_the_command(tmp_path: Path) -> None:
    # A PATH with nothing on it: socat (the relay floor's) is not found.
    r = check("--only", "unix-socket-relay", "--quick", path=str(tmp_path))
    assert r.returncode == 1, r.stderr
    assert "\n  socat  (Debian package socat): unix-socket-relay\n" in r.stderr, r.stderr
    # The same options again, without --check, through the command that installs the peers.
    assert r.stderr.rstrip().endswith(
        "install them and run this again with: ./scripts/quickstart bench --only "
        "unix-socket-relay --quick"), r.stderr


def test_nothing_is_said_when_the_rows_asked_for_need_nothing(tmp_path: Path) -> None:
    r = check("--only", "edgebus-shm,unix-socket", path=str(tmp_path))
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert "every peer is installed" in r.stdout


def test_the_quickstart_offers_the_command_the_advice_names() -> None:
    r = subprocess.run([str(ROOT / "scripts" / "quickstart"), "--help"], capture_output=True,
                       text=True, timeout=30, check=True)
    assert "./scripts/quickstart bench [python -m bench options]" in r.stdout
