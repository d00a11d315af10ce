"""Shared fixtures: a real supervisor process per test, in the test's own temp directory."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgebus.testing import EmbeddedBroker  # after the path insert above


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def make_broker(tmp_path: Path):
    """Factory for a broker with a custom config (not started)."""
    made: list[EmbeddedBroker] = []

    def make(config: dict | None = None, name: str = "broker") -> EmbeddedBroker:
        b = EmbeddedBroker(tmp_path / name, config=config)
        made.append(b)
        return b

    yield make
    for b in made:
        b.cleanup()
