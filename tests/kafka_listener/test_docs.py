"""docs/KAFKA.md's API table lists exactly what ApiVersions advertises (the registry)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgebus.server.kafka.apis import collect

pytestmark = pytest.mark.unit
DOC = Path(__file__).resolve().parents[2] / "docs" / "KAFKA.md"


def documented() -> dict[int, tuple[int, int]]:
    out = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*\w+\s*\|\s*(\d+)\s*\|\s*(\d+)(?:-(\d+))?\s*\|", line)
        if m:
            lo = int(m.group(2))
            out[int(m.group(1))] = (lo, int(m.group(3) or lo))
    return out


def test_api_table_matches_the_registry() -> None:
    registered = {a.api_key: (a.min_version, a.max_version) for a in collect().values()}
    assert documented() == registered
