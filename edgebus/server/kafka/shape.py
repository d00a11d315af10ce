"""Build a kio response of any version from one description.

Kafka's messages gain and lose fields from version to version; kio generates one frozen dataclass
per version. A handler describes its answer once, as keyword values (nested entities as dicts or
lists of dicts), and `build` keeps the fields the requested version has, converts plain ints into
kio's wire types (milliseconds into timedeltas, codes into ErrorCode) and fills fields it was not
given from their defaults. So no handler is written per version, and no encoder by hand.
"""

from __future__ import annotations

import dataclasses
import datetime
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any

from kio.index import load_response_schema
from kio.schema.errors import ErrorCode

_NESTED_TYPES = (list, tuple)


@cache
def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _entity_of(hint: Any) -> type | None:
    """The nested dataclass inside `tuple[X, ...]`, `X`, `X | None` or
    `tuple[X, ...] | None`, if X is a dataclass."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(hint):
            if a is not type(None):
                return _entity_of(a)
        return None
    if origin is tuple:
        return _entity_of(typing.get_args(hint)[0])
    return hint if dataclasses.is_dataclass(hint) and isinstance(hint, type) else None


def _convert(f: dataclasses.Field[Any], hint: Any, value: Any) -> Any:
    if value is None:
        return None
    kind = f.metadata.get("kafka_type")
    if kind in ("timedelta_i32", "timedelta_i64") and isinstance(value, int):
        return datetime.timedelta(milliseconds=value)
    if kind == "error_code" and isinstance(value, int) and not isinstance(value, ErrorCode):
        return ErrorCode(value)
    nested = _entity_of(hint)
    if nested is not None:
        if isinstance(value, _NESTED_TYPES):
            return tuple(v if dataclasses.is_dataclass(v) else build(nested, **v) for v in value)
        if isinstance(value, Mapping):
            return build(nested, **value)
    if isinstance(value, list):
        return tuple(value)
    return value


def build(cls: type, **values: Any) -> Any:
    """An instance of kio entity `cls` from `values`; keys the class lacks are dropped, fields
    without a value take their default (a required field left out is a TypeError: a bug)."""
    fields = _fields(cls)
    hints = _hints(cls)
    kwargs = {k: _convert(fields[k], hints[k], v) for k, v in values.items() if k in fields}
    if "throttle_time" in fields and "throttle_time" not in kwargs:
        kwargs["throttle_time"] = datetime.timedelta(0)
    return cls(**kwargs)


def response(header: Any, **values: Any) -> Any:
    """The response entity for the request `header` (api key and version), built by `build`."""
    cls = load_response_schema(header.request_api_key, header.request_api_version)
    return build(cls, **values)


def response_class(api_key: int, version: int) -> type:
    return load_response_schema(api_key, version)
