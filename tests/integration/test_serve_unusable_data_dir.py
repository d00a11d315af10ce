"""`edgebus serve` with a data directory it cannot make or use (a home directory it cannot enter,
a file in the way, a read-only mount) exits 78 (EX_CONFIG, final under systemd) naming the
directory and what to change, instead of exit 1 with the failing-disk hint "check the kernel log
and the disk; restart the supervisor to run recovery". (Found by running the quickstart as a
user without a home directory.) The real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("where", ["below-a-file", "a-file"])
def test_an_unusable_data_dir_is_a_config_refusal(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file in the way\n")
    data = blocker / "data" if where == "below-a-file" else blocker
    env = {**os.environ, "EDGEBUS_KAFKA_LISTENERS": "127.0.0.1:0"}
    r = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "serve", "--data-dir", str(data),
                        "--socket", str(tmp_path / "s" / "eb.sock")], capture_output=True,
                       text=True, timeout=120, cwd=ROOT, env=env)
    assert r.returncode == 78, r.stderr
    assert f"data directory {data} cannot be made or used by this user" in r.stderr, r.stderr
    assert "--data-dir" in r.stderr and "kernel log" not in r.stderr, r.stderr
    assert blocker.read_text() == "a file in the way\n"
