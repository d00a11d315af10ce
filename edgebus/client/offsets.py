"""LIST_OFFSETS as Admin.list_offsets and Consumer's offset look-ups send it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edgebus.client.types import TopicPartition
from edgebus.errors import error_for_code
from edgebus.protocol import messages as M


def list_offsets(channel: Any, wanted: Iterable[tuple[str, int, int]]
                 ) -> dict[TopicPartition, tuple[int, int]]:
    """(offset, timestamp) per (topic, partition, LATEST -1 | EARLIEST -2 | a time in ms) asked
    for; the first partition's error raises its edgebus error."""
    req = M.ListOffsetsRequest([M.ListOffsetsPartition(t, p, ts) for t, p, ts in wanted])
    if not req.partitions:
        return {}
    out = {}
    for r in channel.request(M.Api.LIST_OFFSETS, req).partitions:
        if r.error_code:
            raise error_for_code(r.error_code, r.error_message)
        out[TopicPartition(r.topic, r.partition)] = (r.offset, r.timestamp)
    return out
