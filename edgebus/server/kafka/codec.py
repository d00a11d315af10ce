"""Kafka request and response bodies through kio (generated from Kafka's JSON message specs).

No per-API encoder is written here: `decode_request` finds the versioned kio schema of the API
and version, `encode_response` writes a kio response entity with the header its version needs.
`build` makes a response entity of any version from keyword values (fields a version lacks are
dropped, plain ints become ErrorCode and timedelta where the schema wants them), so a handler
is written once for all the versions it supports.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import io
import uuid
from types import ModuleType
from typing import Any

from kio.index import load_payload_module
from kio.schema.errors import ErrorCode
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.static.constants import EntityType

from edgebus import errors as E
from edgebus.errors import ProtocolError
from edgebus.server.kafka.framing import frame
from edgebus.server.kafka.lengths import check as check_lengths

API_VERSIONS_KEY = 18
ZERO_UUID = uuid.UUID(int=0)
_ZERO = datetime.timedelta(0)
# kio.serial (the readers and writers) is imported at the first Kafka request, not at start: it
# imports asyncio and with it ssl (about 6 MB of RSS) for a type alias.


@functools.cache
def request_module(api_key: int, version: int) -> ModuleType:
    return load_payload_module(api_key, version, EntityType.request)


@functools.cache
def response_module(api_key: int, version: int) -> ModuleType:
    return load_payload_module(api_key, version, EntityType.response)


@functools.cache
def _request_type(api_key: int, version: int) -> Any:
    mod = request_module(api_key, version)
    return next(v for v in vars(mod).values()
                if isinstance(v, type) and getattr(v, "__type__", None) is EntityType.request
                and v.__module__ == mod.__name__)


@functools.cache
def _reader(entity: type) -> Any:
    from kio.serial import entity_reader

    return entity_reader(entity)


_writers: dict[type, Any] = {}


def _writer(entity: type) -> Any:
    w = _writers.get(entity)
    if w is None:
        from kio.serial import entity_writer

        w = _writers[entity] = entity_writer(entity)
    return w


def is_flexible(api_key: int, version: int) -> bool:
    return bool(_request_type(api_key, version).__flexible__)


def decode_header(api_key: int, version: int, data: memoryview) -> tuple[Any, int]:
    """(the request header, its size): header v2 for flexible versions, else v1. ProtocolError
    when it does not parse."""
    reader = _reader(RequestHeaderV2 if is_flexible(api_key, version) else RequestHeaderV1)
    try:
        header, size = reader(data, 0)
    except Exception as e:  # kio raises ValueError, BufferUnderflow, UnicodeDecodeError, ...
        raise ProtocolError(f"malformed Kafka request header: {e}") from None
    return header, size


def decode_request(api_key: int, version: int, data: memoryview, offset: int) -> Any:
    """The request body of `api_key` `version` at data[offset:]; ProtocolError when it does not
    parse. Bytes after the body are ignored, as Kafka's broker ignores them (librdkafka 2.x
    sends three after a Metadata v12 body)."""
    entity = _request_type(api_key, version)
    check_lengths(entity, data, offset)  # before kio: it allocates from lengths (lengths.py)
    try:
        body, _size = _reader(entity)(data, offset)
    except Exception as e:
        raise ProtocolError(f"malformed Kafka {entity.__name__} v{version}: {e}") from None
    return body


def encode_response(api_key: int, version: int, correlation_id: int, response: Any) -> bytes:
    """The whole response frame: length, header (v1 with tagged fields for a flexible version,
    except ApiVersions, whose response header is always v0 so that any client can read it), body."""
    buf = io.BytesIO()
    buf.write(correlation_id.to_bytes(4, "big", signed=True))
    if api_key != API_VERSIONS_KEY and is_flexible(api_key, version):
        buf.write(b"\x00")  # no tagged fields in the response header
    _writer(type(response))(buf, response)
    return frame(buf.getvalue())


def build(cls: type, **values: Any) -> Any:
    """An instance of the kio entity `cls` from `values`: keys it has no field for are dropped
    (so one call serves every version), ints become ErrorCode / timedelta where the field wants
    them, and throttle_time defaults to 0."""
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind = f.metadata.get("kafka_type")
        if f.name in values:
            v = values[f.name]
            if kind == "error_code" and not isinstance(v, ErrorCode):
                v = ErrorCode(v)
            elif kind in ("timedelta_i32", "timedelta_i64") and isinstance(v, int):
                v = datetime.timedelta(milliseconds=v)
            kw[f.name] = v
        elif f.name == "throttle_time":
            kw[f.name] = _ZERO
        elif kind == "uuid" and f.default is dataclasses.MISSING:
            kw[f.name] = ZERO_UUID
    return cls(**kw)


# --- edgebus errors as Kafka error codes ---------------------------------------------------------

_CODES: dict[type[E.EdgebusError], ErrorCode] = {
    E.CorruptRecordError: ErrorCode.corrupt_message,
    E.InconsistentGroupProtocolError: ErrorCode.inconsistent_group_protocol,
    E.GroupFullError: ErrorCode.group_max_size_reached,
    E.FencedInstanceError: ErrorCode.fenced_instance_id,
    E.InvalidRequestError: ErrorCode.invalid_request,
    E.UnsupportedVersionError: ErrorCode.unsupported_version,
    E.UnknownTopicError: ErrorCode.unknown_topic_or_partition,
    E.UnknownPartitionError: ErrorCode.unknown_topic_or_partition,
    E.TopicExistsError: ErrorCode.topic_already_exists,
    E.InvalidTopicError: ErrorCode.invalid_topic_exception,
    E.RecordTooLargeError: ErrorCode.message_too_large,
    E.OffsetOutOfRangeError: ErrorCode.offset_out_of_range,
    E.DiskFullError: ErrorCode.kafka_storage_error,
    E.StorageError: ErrorCode.kafka_storage_error,
    # Retriable, and makes a client refresh its metadata and try again after the restart.
    E.ShuttingDownError: ErrorCode.not_leader_or_follower,
    E.IllegalGenerationError: ErrorCode.illegal_generation,
    E.UnknownMemberError: ErrorCode.unknown_member_id,
    E.RebalanceInProgressError: ErrorCode.rebalance_in_progress,
    E.GroupNotEmptyError: ErrorCode.non_empty_group,
    E.UnknownGroupError: ErrorCode.group_id_not_found,
    E.RequestTimedOutError: ErrorCode.request_timed_out,
    E.ServerBusyError: ErrorCode.throttling_quota_exceeded,
    E.MirrorReadOnlyError: ErrorCode.invalid_request,
    E.AuthenticationError: ErrorCode.sasl_authentication_failed,
    E.NotAuthenticatedError: ErrorCode.sasl_authentication_failed,
}


def kafka_error(e: BaseException) -> ErrorCode:
    """The Kafka error code for an edgebus error (its nearest base class), UNKNOWN_SERVER_ERROR
    for anything else."""
    for cls in type(e).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return ErrorCode.unknown_server_error
