"""`edgebus acl add` with no config file at all (the quickstart's supervisor runs on built-in
defaults) says that there is none and what to pass, not that "the config file names no
acl.file" (found by following the docs as a user)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgebus import paths
from tests.security.conftest import CHILD_BOUND_S

pytestmark = pytest.mark.integration  # the CLI as a process
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(paths.SYSTEM_CONFIG.exists(), reason=f"{paths.SYSTEM_CONFIG} exists here")
@pytest.mark.parametrize("action", ["add", "remove"])
def test_acl_edit_without_any_config_file_says_so(tmp_path: Path, action: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EDGEBUS_CONFIG"}
    r = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "acl", action, "user:nobody",
                        "read", "topic:x"], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=CHILD_BOUND_S)
    assert r.returncode == 78, r.stderr
    assert "no config file" in r.stderr and "--config" in r.stderr, r.stderr
    assert "names no acl.file" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere
