"""bench.run's Kafka rows: kafka-edgebus and kafka-tansu trade places in every other case, so
that neither broker always runs first (bench/kafka_peers.py alternate_brokers)."""

from __future__ import annotations

from typing import Any

from bench.kafka_peers import alternate_brokers


def _plan(*names: str) -> list[tuple[int, tuple[str, str, Any, Any]]]:
    return [(0, (n, "send", None, False)) for n in names]


def _names(plan: list[tuple[int, tuple[str, str, Any, Any]]]) -> list[str]:
    return [system[0] for _, system in plan]


def test_the_brokers_trade_places_in_odd_cases_and_nothing_else_moves() -> None:
    plan = _plan("edgebus-shm", "redis-streams", "kafka-edgebus", "kafka-tansu", "unix-socket")
    orders = [_names(alternate_brokers(plan, case)) for case in range(4)]
    first = ["edgebus-shm", "redis-streams", "kafka-edgebus", "kafka-tansu", "unix-socket"]
    swapped = ["edgebus-shm", "redis-streams", "kafka-tansu", "kafka-edgebus", "unix-socket"]
    assert orders == [first, swapped, first, swapped]
    assert _names(plan) == first  # the plan itself is left as it was


def test_without_tansu_the_plan_is_as_it_was() -> None:
    plan = _plan("edgebus-shm", "kafka-edgebus")
    assert _names(alternate_brokers(plan, 1)) == ["edgebus-shm", "kafka-edgebus"]
