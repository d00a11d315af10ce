"""Topic names as the fast path meets them on every request: the wire strs (u16 length + UTF-8)
the supervisor writes into responses, and the names a consumer reads back. Both caches are
bounded, since a peer may name any string."""

from __future__ import annotations

from edgebus import format as F

MAX_CACHED = 4096
_encoded: dict[str, bytes] = {}
_decoded: dict[bytes, str] = {}


def wire_str(value: str) -> bytes:
    """A str field's bytes; UnicodeEncodeError or struct.error where the generic codec fails."""
    out = _encoded.get(value)
    if out is None:
        raw = value.encode()
        out = F.STR_LENGTH.pack(len(raw)) + raw
        if len(_encoded) < MAX_CACHED:
            _encoded[value] = out
    return out


def topic_name(raw: bytes) -> str:
    """The str of a topic's UTF-8 bytes; UnicodeDecodeError where the generic codec fails."""
    name = _decoded.get(raw)
    if name is None:
        name = raw.decode()
        if len(_decoded) < MAX_CACHED:
            _decoded[raw] = name
    return name
