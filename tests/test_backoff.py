"""edgebus/backoff.py, the one retry delay of the project (the producer's resends and reconnects,
the MQTT bridge, the replicator): doubling from `lo`, capped at `hi`, half of it fixed and half
random ("equal jitter")."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgebus.backoff import MAX_DOUBLINGS, backoff_delay

pytestmark = pytest.mark.unit


@given(attempt=st.integers(-5, 10_000), lo=st.floats(1e-4, 10), factor=st.floats(1, 1e4),
       seed=st.integers(0, 2**32))
def test_the_delay_is_half_fixed_half_random_within_the_cap(attempt: int, lo: float, factor: float,
                                                           seed: int) -> None:
    hi = lo * factor
    base = min(hi, lo * 2 ** min(max(attempt, 0), MAX_DOUBLINGS))
    d = backoff_delay(attempt, lo, hi, random.Random(seed))
    assert base / 2 <= d <= base <= hi
    assert d > 0


def test_it_doubles_until_the_cap() -> None:
    # the fixed half alone (the random half at its least) shows the doubling
    class Least(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return a

    got = [backoff_delay(n, 0.1, 1.0, Least()) for n in range(6)]
    assert got == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5])


def test_clients_retrying_together_spread_out() -> None:
    rng = random.Random(7)
    delays = {round(backoff_delay(3, 0.1, 10.0, rng), 6) for _ in range(50)}
    assert len(delays) > 40  # not in step
    assert min(delays) >= 0.4 and max(delays) <= 0.8
