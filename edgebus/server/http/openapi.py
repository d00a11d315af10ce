"""The OpenAPI 3.1 document of the HTTP API, written as data (served at /openapi.json).

tests/http/test_api.py checks that every route of api.App is here and nothing else.
"""

from __future__ import annotations

from typing import Any

from edgebus.version import __version__

_ERROR = {"description": "an edgebus error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _op(summary: str, ok: dict[str, Any], *, params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, status: str = "200") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {status: ok, "default": _ERROR}}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


_INT = {"type": "integer"}
_TOPIC = _path("topic", "topic name")
_GROUP = _path("group", "consumer group id")
_ENC = _query("encoding", "auto: UTF-8 text when valid, else base64 (see each record's encoding); "
              "base64: always", {"enum": ["auto", "base64"]})

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "name", "message", "retriable"],
        "properties": {"code": {"type": "integer", "description": "edgebus error code (docs/FORMAT.md 8)"},
                       "name": {"type": "string"}, "message": {"type": "string"},
                       "retriable": {"type": "boolean"}}}}},
    "Topic": {"type": "object", "properties": {
        "name": {"type": "string"}, "configs": {"type": "object", "additionalProperties": {"type": "string"}},
        "partitions": {"type": "array", "items": {"type": "object", "properties": {
            "partition": _INT, "log_start_offset": _INT, "log_end_offset": _INT,
            "size_bytes": _INT, "segments": _INT}}}}},
    "NewRecord": {"type": "object", "properties": {
        "key": {"type": ["string", "null"]},
        "value": {"description": "a string (UTF-8, or base64 with encoding base64), null, or any "
                                 "other JSON value (stored as its JSON text)"},
        "headers": {"oneOf": [{"type": "object", "additionalProperties": {"type": ["string", "null"]}},
                              {"type": "array", "items": {"type": "array", "minItems": 2, "maxItems": 2}}]},
        "partition": _INT, "timestamp": {"type": "integer", "description": "ms since the epoch"}}},
    "Record": {"type": "object", "properties": {
        "partition": _INT, "offset": _INT, "timestamp": _INT, "key": {"type": ["string", "null"]},
        "value": {"type": ["string", "null"]},
        "headers": {"type": "array", "items": {"type": "array"}},
        "encoding": {"enum": ["utf8", "base64"]}}},
}

PATHS: dict[str, Any] = {
    "/": {"get": _op("the web console (HTML)", {"description": "HTML page"})},
    "/console/{file}": {"get": _op("a file of the console (JS, CSS)", {"description": "the file"},
                                   params=[_path("file", "file name")])},
    "/openapi.json": {"get": _op("this document", _json({"type": "object"}))},
    "/api/status": {"get": _op("the supervisor's status: disk, memory, CPU, clients, topics, "
                               "groups, counters (as `edgebus status --json`)", _json({"type": "object"}))},
    "/api/topics": {
        "get": _op("list topics", _json({"type": "object", "properties": {
            "topics": {"type": "array", "items": _ref("Topic")}}})),
        "post": _op("create a topic", _json(_ref("Topic"), "created"), status="201", body={
            "type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "partitions": _INT,
                "configs": {"type": "object", "additionalProperties": {"type": ["string", "integer"]}}}}),
    },
    "/api/topics/{topic}": {
        "get": _op("describe a topic", _json(_ref("Topic")), params=[_TOPIC]),
        "patch": _op("change a topic's settings", _json({"type": "object"}), params=[_TOPIC], body={
            "type": "object", "required": ["configs"], "properties": {
                "configs": {"type": "object", "additionalProperties": {"type": ["string", "integer"]}}}}),
        "delete": _op("delete a topic", _json({"type": "object"}), params=[_TOPIC]),
    },
    "/api/topics/{topic}/records": {
        "get": _op("fetch records from an offset", _json({"type": "object", "properties": {
            "records": {"type": "array", "items": _ref("Record")}, "next_offset": _INT,
            "high_watermark": _INT, "log_start_offset": _INT}}), params=[
            _TOPIC, _query("partition", "partition (default 0)", _INT),
            _query("offset", "first offset, or earliest (default) or latest",
                   {"oneOf": [_INT, {"enum": ["earliest", "latest"]}]}),
            _query("limit", "at most this many records (1-1000, default 100)", _INT),
            _query("max_bytes", "at most this many batch bytes (one whole batch at least)", _INT),
            _query("wait_ms", "wait up to this long for a record when none is there (long poll)", _INT),
            _ENC]),
        "post": _op("produce one record or a batch", _json({"type": "object", "properties": {
            "offsets": {"type": "array", "items": {"type": "object", "properties": {
                "partition": _INT, "offset": _INT}}}}}), params=[
            _TOPIC, _query("acks", "written (default) or durable (fsynced)", {"enum": ["written", "durable"]})],
            body={"oneOf": [_ref("NewRecord"), {"type": "object", "required": ["records"], "properties": {
                "records": {"type": "array", "items": _ref("NewRecord")},
                "encoding": {"enum": ["utf8", "base64"]}}}]}),
    },
    "/api/topics/{topic}/tail": {"get": _op(
        "live tail as Server-Sent Events (event `record`, data a Record); resumes after "
        "Last-Event-ID", {"description": "text/event-stream",
                          "content": {"text/event-stream": {"schema": {"type": "string"}}}}, params=[
            _TOPIC, _query("partition", "one partition (default: all)", _INT),
            _query("from", "where to start without Last-Event-ID", {"enum": ["latest", "earliest"]}),
            _query("back", "start this many records before the end (0-10000)", _INT),
            _query("last_event_id", "as the Last-Event-ID header", {"type": "string"}), _ENC])},
    "/api/groups": {"get": _op("list consumer groups", _json({"type": "object"}))},
    "/api/groups/{group}": {"get": _op("describe a group with its lag per partition",
                                       _json({"type": "object"}), params=[_GROUP])},
    "/api/groups/{group}/reset": {"post": _op(
        "reset a group's committed offsets (the group must have no members)", _json({"type": "object"}),
        params=[_GROUP], body={"type": "object", "required": ["topic"], "properties": {
            "topic": {"type": "string"}, "partitions": {"type": "array", "items": _INT},
            "to": {"enum": ["earliest", "latest", "offset", "timestamp"]}, "value": _INT,
            "dry_run": {"type": "boolean"}}})},
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgebus HTTP API", "version": __version__,
                 "description": "JSON over HTTP/1.1 on the edgebus supervisor (docs/HTTP.md). "
                                "Errors are {\"error\": {code, name, message, retriable}}."},
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "basic": {"type": "http", "scheme": "basic"},
            "bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"basic": []}, {"bearer": []}, {}],
        "paths": PATHS,
    }
