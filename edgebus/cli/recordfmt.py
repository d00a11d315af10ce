"""How `edgebus consume` writes a record (text, JSON, or a kcat-style template), and the
backslash escapes that `--format` templates and `edgebus produce -D` share.

Every output form is binary-safe: text and templates write the key and value bytes as they are;
JSON writes bytes that are UTF-8 as strings and any other bytes as {"base64": ...} (or
{"hex": ...}), never as lossy escapes, so a program can always get the exact bytes back.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

BINARY_ENCODINGS = ("base64", "hex")
# kcat's -f tokens that edgebus has (kcat(1), "Output formatting").
TEMPLATE_TOKENS = {
    "t": "topic", "p": "partition", "o": "offset", "T": "timestamp (ms)", "k": "key",
    "K": "key length (-1 for none)", "s": "value", "S": "value length (-1 for none)",
    "h": "headers as name=value,...", "%": "a percent sign",
}
_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0", "\\": b"\\"}
_ESCAPE_RE = re.compile(rb"\\(x[0-9a-fA-F]{2}|.)", re.S)


def unescape(text: str) -> bytes:
    """The UTF-8 bytes of `text` with \\n \\r \\t \\0 \\\\ and \\xNN replaced (a shell cannot pass
    a NUL byte in an argument, so `-D '\\0'` has to be spelt this way)."""

    def one(m: re.Match[bytes]) -> bytes:
        esc = m.group(1)
        if esc[:1] == b"x" and len(esc) == 3:
            return bytes([int(esc[1:], 16)])
        found = _ESCAPES.get(esc.decode("utf-8", "replace"))
        if found is None:
            raise ValueError(f"unknown escape \\{esc.decode('utf-8', 'replace')} "
                             r"(known: \n \r \t \0 \\ \xNN)")
        return found

    return _ESCAPE_RE.sub(one, text.encode())


def _json_bytes(data: bytes | None, binary: str) -> Any:
    if data is None:
        return None
    data = bytes(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {binary: base64.b64encode(data).decode() if binary == "base64" else data.hex()}


def json_line(record: Any, binary: str = "base64") -> bytes:
    obj = {
        "topic": record.topic, "partition": record.partition, "offset": record.offset,
        "timestamp": record.timestamp, "key": _json_bytes(record.key, binary),
        "value": _json_bytes(record.value, binary),
        "headers": [[k, _json_bytes(v, binary)] for k, v in (record.headers or [])],
    }
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def text_line(record: Any, print_key: bool) -> bytes:
    value = b"null" if record.value is None else bytes(record.value)
    if print_key:
        key = b"null" if record.key is None else bytes(record.key)
        return key + b"\t" + value + b"\n"
    return value + b"\n"


def _raw(data: bytes | None) -> bytes:
    return b"" if data is None else bytes(data)


def _length(data: bytes | None) -> bytes:
    return b"-1" if data is None else str(len(data)).encode()


def _headers(record: Any) -> bytes:
    return b",".join(k.encode() + b"=" + _raw(v) for k, v in (record.headers or []))


_FIELDS: dict[str, Callable[[Any], bytes]] = {
    "t": lambda r: r.topic.encode(),
    "p": lambda r: str(r.partition).encode(),
    "o": lambda r: str(r.offset).encode(),
    "T": lambda r: str(r.timestamp).encode(),
    "k": lambda r: _raw(r.key),
    "K": lambda r: _length(r.key),
    "s": lambda r: _raw(r.value),
    "S": lambda r: _length(r.value),
    "h": _headers,
}


class Template:
    """A kcat-style output template: `%t %p %o %T %k %K %s %S %h %%` and backslash escapes; as in
    kcat, nothing is added (end it with \\n for one record per line)."""

    def __init__(self, text: str) -> None:
        self.parts: list[bytes | Callable[[Any], bytes]] = []
        literal = b""
        for piece in re.split(r"(%.?)", text):
            if not piece.startswith("%"):
                literal += unescape(piece)
                continue
            token = piece[1:]
            if token == "%":
                literal += b"%"
                continue
            if token not in _FIELDS:
                raise ValueError(f"unknown template token %{token} (known: "
                                 + ", ".join(f"%{k} {v}" for k, v in TEMPLATE_TOKENS.items())
                                 + ")")
            if literal:
                self.parts.append(literal)
                literal = b""
            self.parts.append(_FIELDS[token])
        if literal:
            self.parts.append(literal)

    def render(self, record: Any) -> bytes:
        return b"".join(p if isinstance(p, bytes) else p(record) for p in self.parts)
