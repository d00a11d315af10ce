"""bench/micro.py times generic code against its fast path: each pair must do the same work."""

from __future__ import annotations

import pytest

from bench import micro
from edgebus.protocol import messages as M

pytestmark = pytest.mark.unit


def _same(generic: object, fast: object) -> bool:
    if isinstance(generic, M.ProduceRequest):  # the fast decoder returns the fields as a tuple
        topic, partition, acks, batch = fast  # type: ignore[misc]
        return (generic.topic, generic.partition, generic.acks, bytes(generic.batch)) == (
            topic, partition, acks, bytes(batch))
    return generic == fast


@pytest.mark.parametrize("name, generic, fast", micro.cases(), ids=[c[0] for c in micro.cases()])
def test_each_pair_gives_the_same_result(name: str, generic, fast) -> None:
    assert _same(generic(), fast())


def test_the_report_is_written(tmp_path) -> None:
    assert micro.main(["--rounds", "1", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "micro.json").read_text().count('"case"') == len(micro.cases())


def test_the_wakeup_probe_measures_every_hand_off() -> None:
    from bench import wakeup

    r = wakeup.measure(rate=2000, count=300)
    assert 0 < r["samples"] <= 300  # merged wake-ups may skip some, never invent any
    assert 0 < r["p50_us"] <= r["p99_us"]
