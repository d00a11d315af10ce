"""Fixtures shared by the tests of the supervisor loop on its own (no Broker)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgebus.server.loop import Loop
from edgebus.server.stats import Stats


@pytest.fixture
def loop() -> Iterator[Loop]:
    """A bare Loop; the connections the test left open are closed after it."""
    lp = Loop(Stats())
    yield lp
    for c in list(lp.conns.values()):
        lp.close(c)
    lp.sel.close()
