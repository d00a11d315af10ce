"""Records as JSON: what a produce body holds, and what a fetch or a tail answers.

Values, keys and header values are bytes. In JSON they are UTF-8 text by default
(`"encoding": "utf8"`), base64 with `"encoding": "base64"`, and a value that is not a string (an
object, a number) is stored as its compact JSON text, so `{"value": {"celsius": 98.5}}` works.
Answers give each one as text when it is valid UTF-8 and as base64 otherwise, with
`"encoding"` saying which (or always base64 with `?encoding=base64`).
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from dataclasses import dataclass
from typing import Any

from edgebus import batch as B
from edgebus import format as F
from edgebus.errors import InvalidRequestError

MAX_RECORDS_PER_PRODUCE = 10_000  # one request; a larger body is refused, not cut
MAX_RECORDS_PER_ANSWER = 1_000  # one fetch answer's `limit`
ENCODINGS = ("utf8", "base64")


@dataclass(slots=True)
class NewRecord:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    partition: int | None
    timestamp: int | None


def _bytes(v: Any, encoding: str, what: str, json_ok: bool = False) -> bytes | None:
    if v is None:
        return None
    if not isinstance(v, str):
        if json_ok:
            return json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode()
        raise InvalidRequestError(f"{what} must be a string or null, got {type(v).__name__}")
    if encoding == "base64":
        try:
            return base64.b64decode(v, validate=True)
        except binascii.Error:
            raise InvalidRequestError(f"{what} is not valid base64") from None
    return _utf8(v, what)


def _utf8(v: str, what: str) -> bytes:
    try:
        return v.encode()
    except UnicodeEncodeError:  # a lone surrogate from a JSON \ud800 escape
        raise InvalidRequestError(f"{what} is not valid Unicode text (a lone surrogate)") from None


def _int(v: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise InvalidRequestError(f"{what} must be an integer from {lo} to {hi}, got {v!r}")
    return v


def parse_produce(doc: Any) -> list[NewRecord]:
    """The records of a produce body: {"records": [...], "encoding": ...} or one record object."""
    if not isinstance(doc, dict):
        raise InvalidRequestError("the body must be a JSON object: {\"records\": [...]} or one record")
    encoding = doc.get("encoding", "utf8")
    if encoding not in ENCODINGS:
        raise InvalidRequestError(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    items = doc.get("records", [doc])
    if not isinstance(items, list) or not items:
        raise InvalidRequestError("records must be a non-empty list")
    if len(items) > MAX_RECORDS_PER_PRODUCE:
        raise InvalidRequestError(f"{len(items)} records in one request, at most {MAX_RECORDS_PER_PRODUCE}")
    known = {"key", "value", "headers", "partition", "timestamp", "encoding", "records"}
    out = []
    for i, r in enumerate(items):
        where = f"records[{i}]"
        if not isinstance(r, dict):
            raise InvalidRequestError(f"{where} must be an object")
        extra = set(r) - known
        if extra:
            raise InvalidRequestError(f"{where} has unknown field(s) {', '.join(sorted(extra))} "
                                      "(known: key, value, headers, partition, timestamp)")
        headers = r.get("headers") or {}
        pairs = list(headers.items()) if isinstance(headers, dict) else headers
        if not isinstance(pairs, list) or len(pairs) > F.MAX_HEADERS_PER_RECORD:
            raise InvalidRequestError(f"{where}.headers must be an object or a list of [name, value] "
                                      f"pairs, at most {F.MAX_HEADERS_PER_RECORD}")
        hs: list[tuple[str, bytes | None]] = []
        for pair in pairs:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)):
                raise InvalidRequestError(f"{where}.headers: each header is a name and a value")
            _utf8(pair[0], f"{where}.headers name")
            hs.append((pair[0], _bytes(pair[1], encoding, f"{where}.headers[{pair[0]!r}]")))
        part = r.get("partition")
        ts = r.get("timestamp")
        out.append(NewRecord(
            _bytes(r.get("key"), encoding, f"{where}.key"),
            _bytes(r.get("value"), encoding, f"{where}.value", json_ok=True), hs,
            None if part is None else _int(part, f"{where}.partition", 0, F.MAX_PARTITIONS - 1),
            None if ts is None else _int(ts, f"{where}.timestamp", 0, 2**63 - 1)))
    return out


def partition_for_key(key: bytes, partitions: int) -> int:
    """The clients' partitioner (edgebus/client/types.py, invariant 10): CRC-32 of the key
    modulo the count, so a key lands where a Producer would put it."""
    return zlib.crc32(key) % partitions


def build(records: list[NewRecord], now_ms: int) -> bytes:
    """One record batch of `records` (one partition's share of a request)."""
    encoded = []
    first = max_ts = -1
    for r in records:
        ts = r.timestamp if r.timestamp is not None else now_ms
        first = ts if first < 0 else first
        max_ts = max(max_ts, ts)
        encoded.append(B.encode_record(ts, r.key, r.value, r.headers))
    return B.build_batch(encoded, first, max_ts)


def _text(b: bytes | None, force_b64: bool) -> tuple[str | None, str]:
    if b is None:
        return None, "utf8"
    if not force_b64:
        try:
            return b.decode(), "utf8"
        except UnicodeDecodeError:
            pass
    return base64.b64encode(b).decode(), "base64"


def record_doc(r: B.Record, force_b64: bool = False) -> dict[str, Any]:
    """One record as JSON. `encoding` is "base64" when the key, the value or a header value is
    not valid UTF-8 (then all three are base64), else "utf8"."""
    if not force_b64 and not r.headers:  # the common record: text key and value, no headers
        try:
            return {"partition": r.partition, "offset": r.offset, "timestamp": r.timestamp,
                    "key": None if r.key is None else r.key.decode(),
                    "value": None if r.value is None else r.value.decode(),
                    "headers": [], "encoding": "utf8"}
        except UnicodeDecodeError:
            pass
    key, ke = _text(r.key, force_b64)
    value, ve = _text(r.value, force_b64)
    hs = [_text(v, force_b64) for _, v in r.headers]
    if "base64" in (ke, ve, *(e for _, e in hs)) and not force_b64:
        return record_doc(r, True)
    return {"partition": r.partition, "offset": r.offset, "timestamp": r.timestamp, "key": key,
            "value": value, "headers": [[k, v] for (k, _), (v, _) in zip(r.headers, hs, strict=True)],
            "encoding": "base64" if force_b64 else "utf8"}


def decode(data: Any, topic: str, partition: int, offset: int) -> list[B.Record]:
    """The records at or after `offset` in a fetch answer's whole batches."""
    out: list[B.Record] = []
    for batch in B.iter_batches(data):
        out.extend(B.decode_batch(batch, topic, partition, offset))
    return out
