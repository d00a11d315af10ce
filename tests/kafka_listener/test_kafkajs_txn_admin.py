"""kafkajs 2 (a real node process) as a user runs it (docs/KAFKA.md, "Tools tried"): a
transactional, idempotent producer with gzip, one aborted transaction and offsets sent to a
group inside one; read back read_committed (kafkajs's default) and read_uncommitted; then its
admin calls: create (and validate-only), partitions, configs, offsets by time, delete records,
groups, topics, cluster."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.test_kafkajs import kafkajs  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent


def test_kafkajs_transactions_and_admin(kbroker: EmbeddedBroker, kafkajs: Path) -> None:  # noqa: F811
    r = subprocess.run(["node", str(HERE / "kafkajs_txn_admin.js"), kbroker.kafka_bootstrap],
                       capture_output=True, text=True, timeout=180,
                       env={**os.environ, "NODE_PATH": str(kafkajs)})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["created"] is True
    assert (out["retention"], out["partitions"]) == ("7200000", 3)
    assert out["committed"] == ["c0", "c1", "c2"]
    assert out["uncommitted"] == ["c0", "c1", "aborted", "c2"]
    assert out["txOffsets"] == ["1"]
    assert out["byTime"] == ["0"]
    # c0 c1 commit-marker aborted abort-marker c2 commit-marker: the end is offset 7.
    assert out["ends"] == [["0", "7"]] and out["afterDelete"] == [["2", "7"]]
    assert "jstx-g" in out["groups"] and "jstx-g" not in out["groupsAfter"]
    assert "jsa" not in out["topics"] and "jsv" not in out["topics"] and "jstx" in out["topics"]
    assert out["cluster"]["controller"] == 0 and len(out["cluster"]["brokers"]) == 1
