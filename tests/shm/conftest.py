"""Fixtures for the shared-memory tests: a real supervisor per test (as tests/integration)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgebus.testing import EmbeddedBroker


@pytest.fixture
def broker(tmp_path) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def make_broker(tmp_path):
    made: list[EmbeddedBroker] = []

    def make(config: dict | None = None, name: str = "broker") -> EmbeddedBroker:
        b = EmbeddedBroker(tmp_path / name, config=config)
        made.append(b)
        return b

    yield make
    for b in made:
        b.cleanup()
