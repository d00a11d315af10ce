"""Nested kio responses from one description, for every version.

codec.build makes one kio entity from keyword values, dropping the fields a version lacks. The
group and admin answers nest entities several levels deep (topics of partitions, groups of
members), and each version has its own nested classes; `build` here takes nested values as
dicts (or lists of dicts) and builds each with the class the parent's field names, so a handler
describes its answer once for all the versions it serves.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from functools import cache
from types import UnionType
from typing import Any

from kio.static.constants import EntityType

from edgebus.server.kafka import codec


@cache
def _nested(cls: type) -> dict[str, type]:
    """field name -> the nested entity class of a field typed `X`, `tuple[X, ...]` or either
    `| None`."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        inner = hint
        if typing.get_origin(inner) in (typing.Union, UnionType):
            inner = next(a for a in typing.get_args(inner) if a is not type(None))
        if typing.get_origin(inner) is tuple:
            inner = typing.get_args(inner)[0]
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            out[name] = inner
    return out


def build(cls: type, **values: Any) -> Any:
    nested = _nested(cls)
    for name, sub in nested.items():
        v = values.get(name)
        if isinstance(v, Mapping):
            values[name] = build(sub, **v)
        elif isinstance(v, list | tuple):
            values[name] = tuple(build(sub, **x) if isinstance(x, Mapping) else x for x in v)
    for name, v in values.items():
        if isinstance(v, list):
            values[name] = tuple(v)
    return codec.build(cls, **values)


@cache
def _response_class(api_key: int, version: int) -> type:
    mod = codec.response_module(api_key, version)
    cls: type = next(v for v in vars(mod).values() if isinstance(v, type)
                     and getattr(v, "__type__", None) is EntityType.response
                     and v.__module__ == mod.__name__)
    return cls


def response(header: Any, **values: Any) -> Any:
    """The response entity for the request `header` (its api key and version)."""
    return build(_response_class(header.request_api_key, header.request_api_version), **values)
