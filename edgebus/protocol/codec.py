"""A small schema codec: messages are dataclasses whose FIELDS list (name, type) in wire order.

No I/O here. Decoding raises ProtocolError for any malformed or truncated body, nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import fields as dc_fields
from typing import Any, ClassVar, Protocol

from edgebus import format as F
from edgebus.errors import ProtocolError


class WireType(Protocol):
    def encode(self, value: Any, out: list[bytes]) -> None: ...
    def decode(self, mv: memoryview, pos: int) -> tuple[Any, int]: ...


class Int:
    def __init__(self, fmt: str) -> None:
        self.s = struct.Struct("<" + fmt)

    def encode(self, value: Any, out: list[bytes]) -> None:
        try:
            out.append(self.s.pack(value))
        except struct.error as e:
            raise ValueError(f"cannot encode {value!r} as {self.s.format}: {e}") from None

    def decode(self, mv: memoryview, pos: int) -> tuple[Any, int]:
        end = pos + self.s.size
        if end > len(mv):
            raise ProtocolError("message body truncated")
        return self.s.unpack_from(mv, pos)[0], end


I8, I16, I32, I64 = Int("b"), Int("h"), Int("i"), Int("q")
U8, U16, U32 = Int("B"), Int("H"), Int("I")
_LEN = F.BYTES_LENGTH  # also an array's count (F.ARRAY_COUNT)
_LEN_SIZE = _LEN.size
_STR_LEN_SIZE = F.STR_LENGTH.size


class _Bytes:
    """i32 length (-1 = null) then the bytes."""

    def encode(self, value: Any, out: list[bytes]) -> None:
        if value is None:
            out.append(_LEN.pack(-1))
        else:
            out.append(_LEN.pack(len(value)))
            out.append(bytes(value) if isinstance(value, memoryview) else value)

    def decode(self, mv: memoryview, pos: int) -> tuple[Any, int]:
        if pos + _LEN_SIZE > len(mv):
            raise ProtocolError("message body truncated")
        n = _LEN.unpack_from(mv, pos)[0]
        pos += _LEN_SIZE
        if n == -1:
            return None, pos
        if n < 0 or pos + n > len(mv):
            raise ProtocolError(f"bytes field of length {n} overruns the frame")
        return mv[pos : pos + n], pos + n


class _Str:
    """u16 length then UTF-8."""

    def encode(self, value: Any, out: list[bytes]) -> None:
        b = value.encode()
        if len(b) > 0xFFFF:
            raise ValueError("string longer than 65535 bytes")
        out.append(F.STR_LENGTH.pack(len(b)))
        out.append(b)

    def decode(self, mv: memoryview, pos: int) -> tuple[Any, int]:
        if pos + _STR_LEN_SIZE > len(mv):
            raise ProtocolError("message body truncated")
        n = F.STR_LENGTH.unpack_from(mv, pos)[0]
        pos += _STR_LEN_SIZE
        if pos + n > len(mv):
            raise ProtocolError(f"string of length {n} overruns the frame")
        try:
            return bytes(mv[pos : pos + n]).decode(), pos + n
        except UnicodeDecodeError:
            raise ProtocolError("string is not valid UTF-8") from None


BYTES = _Bytes()
STR = _Str()

# An array may not claim more elements than bytes remain: bounds memory before allocation.
class Array:
    def __init__(self, item: Any) -> None:
        self.item = item

    def encode(self, value: Any, out: list[bytes]) -> None:
        out.append(_LEN.pack(len(value)))
        for v in value:
            self.item.encode(v, out)

    def decode(self, mv: memoryview, pos: int) -> tuple[Any, int]:
        if pos + _LEN_SIZE > len(mv):
            raise ProtocolError("message body truncated")
        n = _LEN.unpack_from(mv, pos)[0]
        pos += _LEN_SIZE
        if n < 0 or n > len(mv) - pos:
            raise ProtocolError(f"array of {n} elements cannot fit in the frame")
        items = []
        for _ in range(n):
            v, pos = self.item.decode(mv, pos)
            items.append(v)
        return items, pos


class Message:
    """Base for wire structs: subclasses are dataclasses with FIELDS in wire order."""

    FIELDS: ClassVar[tuple[tuple[str, Any], ...]] = ()

    @classmethod
    def encode(cls, value: Any, out: list[bytes]) -> None:
        for name, typ in cls.FIELDS:
            typ.encode(getattr(value, name), out)

    @classmethod
    def decode(cls, mv: memoryview, pos: int) -> tuple[Any, int]:
        kwargs = {}
        for name, typ in cls.FIELDS:
            kwargs[name], pos = typ.decode(mv, pos)
        return cls(**kwargs), pos

    def to_bytes(self) -> bytes:
        out: list[bytes] = []
        type(self).encode(self, out)
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> Any:
        mv = memoryview(data)
        value, pos = cls.decode(mv, 0)
        if pos != len(mv):
            raise ProtocolError(f"{cls.__name__} has {len(mv) - pos} unexpected trailing bytes")
        return value

    @classmethod
    def check_fields(cls) -> None:
        """Assert FIELDS names match the dataclass fields (used by tests)."""
        names = [f.name for f in dc_fields(cls)]  # type: ignore[arg-type]
        assert names == [n for n, _ in cls.FIELDS], (cls.__name__, names)


class EncodedRequest:
    """A request body that a hand-written codec (the PRODUCE/FETCH fast path) has already
    encoded. It builds its whole frame itself, so a channel sends `frame(corr)` as it is and the
    generic codec never sees it. Subclasses give `api_key` and `frame`."""

    __slots__ = ()
    api_key: ClassVar[int]

    def frame(self, correlation_id: int) -> bytes:
        raise NotImplementedError
