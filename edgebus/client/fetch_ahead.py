"""Fetch-ahead for a consumer on the shared-memory transport: pure functions, no I/O.

A consumer's poll loop is request/response: while it decodes one fetch answer the supervisor is
idle, and while the supervisor reads the log the consumer waits. The rings make a second request
in flight nearly free, so right after each fetch answer ShmSyncChannel sends the fetch the
consumer will most likely send next (same partitions and limits, each offset moved past the
batches just received, the same max_wait_ms, so it parks at the supervisor until data comes) and
keeps one such fetch outstanding. When the consumer's next FETCH is that request (compared byte
for byte, max_wait_ms aside), it waits for the outstanding answer for at most its own
max_wait_ms; if that passes first it gets "nothing yet" (no records, the last known watermarks)
and the fetch stays parked for the next poll. Any other request discards the guess (its answer is
dropped when it comes). The number of fetches stays one per answer, as without fetch-ahead; what
changes is that the supervisor works while the consumer decodes.
"""

from __future__ import annotations

from edgebus.fastpath.fetch import FetchBody
from edgebus.fastpath.standing import end_offset as _end_offset
from edgebus.fastpath.standing import next_fetch
from edgebus.protocol import messages as M
from edgebus.protocol.codec import Message


def fetch_key(req: M.FetchRequest) -> bytes:
    """The request's identity for matching: everything but max_wait_ms."""
    out: list[bytes] = []
    M.FetchRequest.encode(M.FetchRequest(0, req.min_bytes, req.max_bytes, req.partitions), out)
    return b"".join(out)


def next_body(body: FetchBody, resp: M.FetchResponse, max_wait_ms: int = 0) -> FetchBody | None:
    """next_fetch for an encoded body: the same guess, encoded from body's plan."""
    parts = resp.partitions
    keys = body.plan.keys
    offsets = body.offsets
    if len(parts) == len(keys) == 1:  # one partition: no lookup by key
        got = parts[0]
        if got.error_code or (got.topic, got.partition) != keys[0]:
            return None
        end = _end_offset(got.records)
        if end is None or end <= offsets[0]:
            return None
        return body.with_offsets((end,), max_wait_ms)
    by_tp = {(p.topic, p.partition): p for p in parts}
    new = []
    moved = False
    for key, off in zip(keys, offsets, strict=True):
        found = by_tp.get(key)
        if found is None or found.error_code:
            return None
        end = _end_offset(found.records)
        if end is not None and end > off:
            moved = True
            off = end
        new.append(off)
    return body.with_offsets(new, max_wait_ms) if moved else None


def is_empty(resp: Message) -> bool:
    if not isinstance(resp, M.FetchResponse):
        return False
    for p in resp.partitions:  # noqa: SIM110 (a generator costs more; this runs on every poll)
        if p.records:
            return False
    return True


__all__ = ["fetch_key", "is_empty", "next_body", "next_fetch"]
