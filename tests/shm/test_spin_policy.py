"""edgebus/shm/spin.py: a ring reader spins only while its frames come closer together than
SPIN_GAP_NS on average, for about two average gaps, never past the caller's limit; one long
idle gap is forgotten after a dozen close frames. The spin policy of both the supervisor's link
and the client's response ring is this object (tests/shm/test_transport.py and friends run the
transport itself with it)."""

from __future__ import annotations

import pytest

from edgebus.shm import spin
from edgebus.shm.spin import GAP_CAP_NS, SPIN_FACTOR, Arrivals
from edgebus.tuning import SPIN_GAP_NS

LIMIT = 200_000  # the default SPIN_NS


def paced(gap_ns: int, n: int, start: int = 1_000_000_000) -> Arrivals:
    a = Arrivals()
    for k in range(n):
        a.arrived(start + k * gap_ns)
    return a


@pytest.fixture(autouse=True)
def _a_core_is_free(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spin, "cpu_free", lambda now: True)  # the machine's load is not under test


def test_no_history_means_no_spinning() -> None:
    a = Arrivals()
    assert a.window(LIMIT) == 0
    assert a.spin_ns(5_000_000, LIMIT) == 0


@pytest.mark.parametrize("rate", [1_000, 10_000])
def test_paced_traffic_at_1k_and_10k_per_second_never_spins(rate: int) -> None:
    a = paced(1_000_000_000 // rate, 200)
    assert a.window(LIMIT) == 0
    assert a.spin_ns(a.last + 1, LIMIT) == 0


def test_close_frames_spin_for_two_average_gaps() -> None:
    gap = SPIN_GAP_NS // 5
    a = paced(gap, 200)
    assert a.window(LIMIT) == pytest.approx(SPIN_FACTOR * gap, rel=0.05)
    assert 0 < a.spin_ns(a.last + gap // 2, LIMIT) < SPIN_FACTOR * gap
    assert a.spin_ns(a.last + 3 * gap, LIMIT) == 0  # the window has passed: sleep


def test_the_callers_limit_bounds_a_spin() -> None:
    a = paced(SPIN_GAP_NS // 2, 200)
    assert a.window(1_000) == 1_000


def test_an_idle_gap_is_forgotten_after_a_burst_of_close_frames() -> None:
    a = paced(SPIN_GAP_NS // 10, 100)
    a.arrived(a.last + 60_000_000_000)  # a minute of silence counts as GAP_CAP_NS
    assert a.gap <= GAP_CAP_NS and a.window(LIMIT) == 0
    for _ in range(20):
        a.arrived(a.last + SPIN_GAP_NS // 10)
    assert a.window(LIMIT) > 0


def test_no_core_to_spare_means_no_spinning(monkeypatch: pytest.MonkeyPatch) -> None:
    a = paced(SPIN_GAP_NS // 5, 200)
    monkeypatch.setattr(spin, "cpu_free", lambda now: False)
    assert a.spin_ns(a.last + 1, LIMIT) == 0
