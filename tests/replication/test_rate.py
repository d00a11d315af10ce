"""The shipping rate in the replicator's status (bridges/replicator/rate.py), on a made-up clock:
the newest sample against the one about a window ago; an idle partition falls to 0; a new
session's counters (which start over) start a new history."""

from __future__ import annotations

import pytest

from bridges.replicator.rate import Rate

pytestmark = pytest.mark.unit


def test_the_rate_is_over_the_last_window() -> None:
    r = Rate(window_s=10)
    assert r.per_s() == (0.0, 0.0)
    for t in range(0, 21):  # 100 records and 1000 bytes a second, for 20 s
        r.sample(float(t), 100 * t, 1000 * t)
    assert r.per_s() == (100.0, 1000.0)
    for t in range(21, 26):  # then 300 a second for 5 s: half the window is faster
        r.sample(float(t), 2000 + 300 * (t - 20), 0)
    assert r.per_s()[0] == pytest.approx((3500 - 1500) / 10)


def test_an_idle_partition_falls_to_zero_and_a_new_session_starts_over() -> None:
    r = Rate(window_s=10)
    for t in range(0, 6):
        r.sample(float(t), 50 * t, 0)
    assert r.per_s()[0] == 50.0
    for t in range(6, 17):  # nothing shipped for 11 s
        r.sample(float(t), 250, 0)
    assert r.per_s()[0] == 0.0
    r.sample(17.0, 10, 0)  # a new session: its counter starts at 0
    assert r.per_s() == (0.0, 0.0)
    r.sample(19.0, 30, 0)
    assert r.per_s()[0] == 10.0
