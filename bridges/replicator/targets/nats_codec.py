"""One edgebus record as one NATS message, and back (docs/REPLICATION.md, "NATS JetStream").

Subject: `<subject_prefix>.<topic>.<partition>` (the topic's dots are subject tokens, the
partition is always the last token). Payload: the record's value. NATS headers:

    Nats-Msg-Id           <node>/<topic>/<partition>/<offset>   (every message; JetStream dedup)
    Edgebus-Timestamp     the record's timestamp, ms since the epoch
    Edgebus-Key           the key, when it is plain text (UTF-8, printable, no edge spaces)
    Edgebus-Key-B64       otherwise the key in base64 (no key: neither header)
    Edgebus-Null-Value    "1" when the value is null (an empty payload is an empty value)
    <name>                each record header whose name is a plain token (not Nats-/Edgebus-),
                          whose value is plain text, names not repeated
    Edgebus-Headers       otherwise all the record's headers, base64 of JSON
                          [[name, base64 value or null], ...] (order and repeats kept)
    Edgebus-Resume        on the last message of each atomic batch only: the offset the link
                          resumes from when this is the subject's last message
    Edgebus-Incarnation   on the same message: the source topic's incarnation
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence

MSG_ID = "Nats-Msg-Id"
TIMESTAMP = "Edgebus-Timestamp"
KEY = "Edgebus-Key"
KEY_B64 = "Edgebus-Key-B64"
NULL_VALUE = "Edgebus-Null-Value"
HEADERS = "Edgebus-Headers"
RESUME = "Edgebus-Resume"
INCARNATION = "Edgebus-Incarnation"
GAP = "Edgebus-Gap"  # on a gap marker: "<start>/<end>/<reason>", offsets never shipped

_TOKEN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_RESERVED = ("nats-", "edgebus-")


def subject_for(prefix: str, topic: str, partition: int) -> str:
    return f"{prefix}.{topic}.{partition}"


def takes(pattern: str, subject: str) -> bool:
    """Whether a stream's subject filter takes a subject (NATS wildcards * and >)."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


def subject_problem(topic: str) -> str | None:
    """Why a topic name cannot be a run of subject tokens (an empty token), or None."""
    if topic.startswith(".") or topic.endswith(".") or ".." in topic:
        return (f"topic {topic!r} would make an empty NATS subject token (a leading, trailing "
                "or doubled '.'); such a topic cannot be shipped to NATS")
    return None


def msg_id(node: str, topic: str, partition: int, offset: int) -> str:
    return f"{node}/{topic}/{partition}/{offset}"


def _plain(text: str) -> bool:
    return bool(text) and text.isprintable() and text == text.strip()


def _text(b: bytes) -> str | None:
    try:
        s = b.decode()
    except UnicodeDecodeError:
        return None
    return s if _plain(s) else None


def encode(node: str, topic: str, partition: int, offset: int, timestamp: int,
           key: bytes | None, value: bytes | None,
           headers: Sequence[tuple[str, bytes | None]]) -> tuple[bytes, dict[str, str]]:
    """(payload, NATS headers) of one record."""
    h = {MSG_ID: msg_id(node, topic, partition, offset), TIMESTAMP: str(timestamp)}
    extras(h, key, value, headers)
    return value or b"", h


def extra_lines(key: bytes | None, value: bytes | None,
                headers: Sequence[tuple[str, bytes | None]]) -> str:
    """The headers encode() adds after the id and timestamp, as header block lines: one
    string per record, no dict, for the target's batch encoder (nats_frames.py)."""
    if key is None and value is not None and not headers:
        return ""  # the common case of telemetry without a key
    h: dict[str, str] = {}
    extras(h, key, value, headers)
    return "".join(f"{k}: {v}\r\n" for k, v in h.items())


def extras(h: dict[str, str], key: bytes | None, value: bytes | None,
           headers: Sequence[tuple[str, bytes | None]]) -> None:
    """Adds the key, null-value and record-header headers of a record to `h`."""
    if key is not None:
        k = _text(key)
        if k is not None:
            h[KEY] = k
        else:
            h[KEY_B64] = base64.b64encode(key).decode() or "="  # "=": the empty key
    if value is None:
        h[NULL_VALUE] = "1"
    if headers:
        plain: dict[str, str] = {}
        for name, v in headers:
            t = _text(v) if v is not None else None
            if (t is None or not _TOKEN.fullmatch(name) or name.lower().startswith(_RESERVED)
                    or name.lower() in (n.lower() for n in plain)):
                plain = {}
                h[HEADERS] = base64.b64encode(json.dumps(
                    [[n, None if b is None else base64.b64encode(b).decode()]
                     for n, b in headers], separators=(",", ":")).encode()).decode()
                break
            plain[name] = t
        h.update(plain)


Decoded = tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]


def decode(headers: Mapping[str, str], payload: bytes) -> Decoded:
    """(offset, timestamp, key, value, headers) of a message written by encode()."""
    offset = int(headers[MSG_ID].rsplit("/", 1)[1])
    key: bytes | None = None
    if KEY in headers:
        key = headers[KEY].encode()
    elif KEY_B64 in headers:
        raw = headers[KEY_B64]
        key = b"" if raw == "=" else base64.b64decode(raw)
    value = None if headers.get(NULL_VALUE) == "1" else payload
    out: list[tuple[str, bytes | None]]
    if HEADERS in headers:
        out = [(n, None if b is None else base64.b64decode(b))
               for n, b in json.loads(base64.b64decode(headers[HEADERS]))]
    else:
        out = [(n, v.encode()) for n, v in headers.items()
               if not n.lower().startswith(_RESERVED)]
    return offset, int(headers[TIMESTAMP]), key, value, out


def parse_header_block(raw: bytes) -> dict[str, str]:
    """The headers of a message returned by the JetStream API (`NATS/1.0` and `Name: value`
    lines, base64 in the JSON answer)."""
    lines = raw.decode(errors="replace").split("\r\n")
    out: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            out.setdefault(name.strip(), value.strip())
    return out
