"""The live tail: a topic's records as Server-Sent Events, fed by long-poll fetches.

Each loop of the stream is one FETCH with `min_bytes=1` and a wait of POLL_WAIT_MS: the
supervisor parks it (edgebus/server/fetchwait.py) and answers it when an append brings data, or
when the wait runs out (then the stream sends a `: keep-alive` comment). Nothing polls.

Event ids let a client resume where it stopped (an EventSource sends the last one back as
`Last-Event-ID` when it reconnects, after a network drop or a supervisor restart): for a stream
of one partition the id is the offset of the record; for several, `p:o,p:o,...` gives, per
partition, the offset of the last record delivered (one less than the start for a partition that
has delivered none). The stream resumes after those offsets: nothing missed, nothing twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from edgebus import errors as E
from edgebus import format as F
from edgebus.protocol import messages as M
from edgebus.server.http import records as R
from edgebus.server.http.exchange import Call, Emit, Pause, Reply, Request, json_reply

if TYPE_CHECKING:
    from edgebus.server.http.api import App

POLL_WAIT_MS = 15_000  # the longest a parked fetch waits; a keep-alive comment follows
FETCH_BYTES = 256 * 1024  # per fetch of a stream (at least one whole batch is always sent)
MAX_BACK = 10_000  # ?back=N: start N records before the end of each partition
RETRY_MS = 1000  # what the browser waits before reconnecting
HEADERS = [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-store"),
           ("x-accel-buffering", "no")]


def parse_last_event_id(value: str, partitions: list[int]) -> dict[int, int]:
    """Positions (next offsets) from a Last-Event-ID; InvalidRequestError when it is not one
    of ours."""
    out: dict[int, int] = {}
    try:
        if ":" not in value:
            if len(partitions) != 1:
                raise ValueError("a plain offset names one partition")
            out[partitions[0]] = int(value) + 1
        else:
            for item in value.split(","):
                p, _, o = item.partition(":")
                out[int(p)] = int(o) + 1
    except ValueError as e:
        raise E.InvalidRequestError(f"Last-Event-ID {value!r} is not an edgebus position: {e}") from None
    if any(p not in partitions or o < 0 for p, o in out.items()):
        raise E.InvalidRequestError(f"Last-Event-ID {value!r} names partitions or offsets this "
                                    "stream does not have")
    return out


def event_id(last: dict[int, int]) -> str:
    if len(last) == 1:
        for o in last.values():
            return str(o)
    return ",".join(f"{p}:{o}" for p, o in sorted(last.items()))


def tail(app: App, req: Request, topic: str, b64: bool) -> Generator[Any, Any, Reply]:
    meta = yield Call(M.Api.METADATA, M.MetadataRequest([topic]))
    t = meta.topics[0] if meta.topics else None
    if t is None or t.error_code:
        raise E.error_for_code(t.error_code if t else E.UnknownTopicError.code,
                               t.error_message if t else f"unknown topic {topic!r}")
    all_parts = [p.partition for p in t.partitions]
    if req.query.get("partition", "") != "":
        try:
            one = int(req.query["partition"])
        except ValueError:
            raise E.InvalidRequestError("partition must be an integer") from None
        if one not in all_parts:
            raise E.UnknownPartitionError(f"topic {topic!r} has no partition {one}")
        parts = [one]
    else:
        parts = all_parts
    resume = req.headers.get("last-event-id") or req.query.get("last_event_id")
    pos: dict[int, int] = parse_last_event_id(resume, parts) if resume else {}
    start = req.query.get("from", "latest")
    back = req.query.get("back", "0")
    if start not in ("latest", "earliest") or not back.isdigit() or int(back) > MAX_BACK:
        raise E.InvalidRequestError(f"from must be latest or earliest and back from 0 to {MAX_BACK}")
    need = [p for p in parts if p not in pos]
    if need:
        lo = yield Call(M.Api.LIST_OFFSETS, M.ListOffsetsRequest([
            M.ListOffsetsPartition(topic, p, M.EARLIEST) for p in need]
            + [M.ListOffsetsPartition(topic, p, M.LATEST) for p in need]))
        for a, b in zip(lo.partitions[:len(need)], lo.partitions[len(need):], strict=True):
            if a.error_code or b.error_code:
                raise E.error_for_code(a.error_code or b.error_code, a.error_message or b.error_message)
            pos[a.partition] = a.offset if start == "earliest" else max(a.offset, b.offset - int(back))
    last = {p: pos[p] - 1 for p in parts}
    yield Emit(f"retry: {RETRY_MS}\nid: {event_id(last)}\n: edgebus tail of {topic}\n\n".encode(),
               HEADERS, reads=topic)
    try:
        yield from _follow(app, topic, parts, pos, last, b64)
    except E.EdgebusError as e:
        # The stream may not go on: its fetch was refused, or a reload removed its user or its
        # right to read the topic (ExchangeRunner.end_stream). The client is told why.
        yield Emit(_event("error", {"code": e.code, "message": str(e)}))
    return json_reply({})


def _follow(app: App, topic: str, parts: list[int], pos: dict[int, int], last: dict[int, int],
            b64: bool) -> Generator[Any, Any, None]:
    """The stream's events until the supervisor stops or a partition fails."""
    while not app.stopping:
        asked = time.monotonic()
        try:
            resp = yield Call(M.Api.FETCH, M.FetchRequest(POLL_WAIT_MS, 1, F.MAX_FETCH_RESPONSE_BYTES, [
                M.FetchPartition(topic, p, pos[p], FETCH_BYTES) for p in parts]))
        except (E.ServerBusyError, E.ShuttingDownError):
            yield Pause(1.0)
            continue
        out: list[bytes] = []
        for fp in resp.partitions:
            p = fp.partition
            if fp.error_code == E.OffsetOutOfRangeError.code and pos[p] < fp.log_start_offset:
                # retention deleted what the stream had not read: say so, go on from the start
                out.append(_event("gap", {"partition": p, "from": pos[p], "to": fp.log_start_offset}))
                pos[p] = fp.log_start_offset
                continue
            if fp.error_code:
                out.append(_event("error", {"partition": p, "code": fp.error_code,
                                            "message": fp.error_message}))
                yield Emit(b"".join(out))
                return
            for r in R.decode(fp.records, topic, p, pos[p]):
                last[p] = r.offset
                pos[p] = r.offset + 1
                out.append(b"id: %s\nevent: record\ndata: %s\n\n" % (
                    event_id(last).encode(), _json(R.record_doc(r, b64))))
        if out:
            yield Emit(b"".join(out))
        else:
            yield Emit(b": keep-alive\n\n")
            if time.monotonic() - asked < 0.5:  # not parked (the supervisor is stopping, ...)
                yield Pause(1.0)


# One encoder for every event: json.dumps with arguments builds a new encoder per call.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _json(doc: Any) -> bytes:
    return _encode(doc).encode()


def _event(name: str, doc: Any) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name.encode(), _json(doc))
