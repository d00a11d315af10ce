"""What a subject of the NATS target holds, for the gap tests: its records (decoded as the
conformance suite does) and its gap markers, told apart by the Edgebus-Gap header."""

from __future__ import annotations

from typing import Any

from bridges.replicator.targets import nats_codec as C
from edgebus.testing import free_port

__all__ = ["free_port", "split"]


def split(nats: Any, topic: str) -> tuple[list[tuple[Any, ...]], list[str]]:
    records, gaps = [], []
    for h, payload, _ in nats.messages(topic, 0):
        if C.GAP in h:
            gaps.append(h[C.GAP])
            continue
        off, ts, key, value, headers = C.decode(h, payload)
        records.append((off, ts, key, value, tuple(headers)))
    return records, gaps
