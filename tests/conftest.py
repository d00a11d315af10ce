"""Shared fixtures: a real supervisor process per test, in the test's own temp directory."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgebus.testing import EmbeddedBroker  # after the path insert above

# Every supervisor a test starts (through EmbeddedBroker or `edgebus serve` itself) puts its
# Kafka listener on a free port: the default 127.0.0.1:9092 would collide between tests run
# at once, and with a Kafka broker on the machine (edgebus/config.py ENV_KAFKA_LISTENERS).
os.environ.setdefault("EDGEBUS_KAFKA_LISTENERS", "127.0.0.1:0")


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., EmbeddedBroker]]:
    """Factory for a broker with a custom config (not started); every one is cleaned up after
    the test."""
    made: list[EmbeddedBroker] = []

    def make(config: dict[str, Any] | None = None, name: str = "broker") -> EmbeddedBroker:
        b = EmbeddedBroker(tmp_path / name, config=config)
        made.append(b)
        return b

    yield make
    for b in made:
        b.cleanup()


@pytest.fixture
def broker_config() -> dict[str, Any] | None:
    """The config of the `broker` fixture: a test directory's conftest.py overrides this fixture
    instead of writing its own broker fixture."""
    return None


@pytest.fixture
def broker(make_broker: Callable[..., EmbeddedBroker], broker_config: dict[str, Any] | None) -> EmbeddedBroker:
    """A started supervisor in the test's temp directory."""
    return make_broker(broker_config).start()
