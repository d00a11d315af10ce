"""The one rule both ends of a standing fetch apply (FETCH_STANDING, docs/FORMAT.md 7.13):
after an answer, the next request is the same fetch with each partition's offset moved past the
whole batches the answer carried; when no offset moved (no records, or a partition error) the
standing fetch has ended. The supervisor re-arms with it, the consumer computes the same request
to know what the next answer on the same correlation id answers, so neither sends anything.
Pure functions, no I/O.
"""

from __future__ import annotations

from edgebus import format as F
from edgebus.protocol import messages as M


def end_offset(records: bytes | memoryview | None) -> int | None:
    """The offset after the last whole batch in a fetched chunk (None if it holds none)."""
    if not records:
        return None
    pos, end, last = 0, len(records), None
    unpack = F.BATCH_SCAN.unpack_from
    while end - pos >= F.BATCH_HEADER_SIZE:
        base, length, count = unpack(records, pos)
        if length < F.BATCH_HEADER_SIZE or pos + length > end:
            break
        last = base + count
        pos += length
    return last


def next_fetch(req: M.FetchRequest, resp: M.FetchResponse, max_wait_ms: int = 0
               ) -> M.FetchRequest | None:
    """The fetch that follows `req` once `resp` answered it, or None (no offset moved, or an
    error: a standing fetch ends there)."""
    by_tp = {(p.topic, p.partition): p for p in resp.partitions}
    parts = []
    moved = False
    for fp in req.partitions:
        got = by_tp.get((fp.topic, fp.partition))
        if got is None or got.error_code:
            return None
        end = end_offset(got.records)
        if end is not None and end > fp.offset:
            moved = True
            parts.append(M.FetchPartition(fp.topic, fp.partition, end, fp.max_bytes))
        else:
            parts.append(fp)
    if not moved:
        return None
    return M.FetchRequest(max_wait_ms, req.min_bytes, req.max_bytes, parts)
