"""docs/KAFKA.md's API table lists exactly what ApiVersions advertises: the registry, and the
answer of a running listener."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.api_versions.v3.response import ApiVersionsResponse

from edgebus.server.kafka.apis import collect
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import connect, parse_response, raw_request, read_frame

DOC = Path(__file__).resolve().parents[2] / "docs" / "KAFKA.md"


def documented() -> dict[int, tuple[int, int]]:
    out = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*\w+\s*\|\s*(\d+)\s*\|\s*(\d+)(?:-(\d+))?\s*\|", line)
        if m:
            lo = int(m.group(2))
            out[int(m.group(1))] = (lo, int(m.group(3) or lo))
    return out


@pytest.mark.unit
def test_api_table_matches_the_registry() -> None:
    registered = {a.api_key: (a.min_version, a.max_version) for a in collect().values()}
    assert documented() == registered


@pytest.mark.integration
def test_api_table_matches_what_a_running_listener_advertises(kbroker: EmbeddedBroker) -> None:
    """The table against the wire, not the registry: ApiVersions v3 of a started supervisor
    lists exactly the documented keys and version ranges."""
    with connect(kbroker) as s:
        s.sendall(raw_request(18, 3, 1, ApiVersionsRequest(client_software_name="docs",
                                                           client_software_version="1")))
        _, resp = parse_response(read_frame(s), ApiVersionsResponse, flexible_header=False)
    assert resp.error_code == 0
    advertised = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}
    assert advertised == documented()
    # Every API the Kafka-protocol issue names is among them (by key).
    named = {0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 32, 36, 37, 42,
             44}
    assert named <= set(advertised), sorted(named - set(advertised))
