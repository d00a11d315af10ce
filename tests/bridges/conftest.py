"""Fixtures of the MQTT bridge tests (helpers in mqtt_helpers.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mqtt_helpers import MOSQUITTO, BridgeProcess, Device, Mosquitto

from edgebus.testing import EmbeddedBroker


@pytest.fixture
def make_mosquitto(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Factory: a started Mosquitto with the given options (see Mosquitto)."""
    if MOSQUITTO is None:
        pytest.skip("the mosquitto binary is not installed (apt-get install mosquitto)")
    made: list[Mosquitto] = []

    def make(**options: Any) -> Mosquitto:
        m = Mosquitto(tmp_path / f"mosquitto-{len(made)}", **options).start()
        made.append(m)
        return m

    yield make
    for m in made:
        m.kill9()


@pytest.fixture
def mosquitto(make_mosquitto: Callable[..., Mosquitto]) -> Mosquitto:
    """A Mosquitto without persistence (fast; the bridge's session lives as long as it runs)."""
    return make_mosquitto()


@pytest.fixture
def edgebus_broker(broker: EmbeddedBroker) -> EmbeddedBroker:
    """The shared `broker` fixture (tests/conftest.py), under the name the bridge tests use
    beside `mosquitto`."""
    return broker


@pytest.fixture
def make_bridge(tmp_path: Path) -> Iterator[Callable[..., BridgeProcess]]:
    made: list[BridgeProcess] = []

    def make(config: dict[str, Any], name: str = "bridge") -> BridgeProcess:
        b = BridgeProcess(tmp_path / name, config)
        made.append(b)
        return b

    yield make
    for b in made:
        b.kill9()


@pytest.fixture
def devices() -> Iterator[list[Device]]:
    made: list[Device] = []
    yield made
    for d in made:
        with contextlib.suppress(Exception):
            d.close()
