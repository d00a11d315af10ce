"""What an HTTP route and the listener say to each other (edgebus/server/listeners/http_connection.py).

A route is a function of a `Request`. It returns a `Reply` at once, or a generator (an exchange)
that yields:

- `Call(api_key, body)`: one request of the socket protocol, handed to the dispatcher; the
  generator receives the decoded response body, or the typed error is raised inside it;
- `Emit(data, headers)`: bytes of a streamed answer (the first one sends the response head);
- `Pause(seconds)`: resume after a while (a stream retrying after ServerBusyError);

and finally returns its `Reply` (ignored once a stream has started). No sockets here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from edgebus import errors as E
from edgebus.protocol.codec import Message

JSON = "application/json"

# HTTP status of each edgebus error (by class; anything else is a 500 or a 503 if retriable).
_STATUS: dict[type[E.EdgebusError], int] = {
    E.InvalidRequestError: 400, E.ProtocolError: 400, E.InvalidTopicError: 400,
    E.UnsupportedVersionError: 400,
    E.OffsetOutOfRangeError: 416,
    E.UnknownTopicError: 404, E.UnknownPartitionError: 404, E.UnknownGroupError: 404,
    E.TopicExistsError: 409, E.GroupNotEmptyError: 409, E.MirrorReadOnlyError: 409,
    E.RebalanceInProgressError: 409,
    E.TopicLimitError: 409,
    E.RecordTooLargeError: 413,
    E.AuthenticationError: 401, E.NotAuthenticatedError: 403,
    E.DiskFullError: 507,
    E.ShuttingDownError: 503, E.ServerBusyError: 503, E.TooManyConnectionsError: 503,
    E.RequestTimedOutError: 504,
}


@dataclass(frozen=True, slots=True)
class Call:
    api_key: int
    body: Message


@dataclass(frozen=True, slots=True)
class Emit:
    data: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    # The topic an event stream reads (on its first Emit): a reload that removes its user or
    # its right to read the topic ends the stream (ExchangeRunner.end_stream).
    reads: str | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    seconds: float


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Request:
    method: str
    path: str  # percent-decoded per segment by the router, raw here
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    conn: Any  # the HttpConnection (principal, scheme)

    @classmethod
    def from_h11(cls, head: Any, body: bytes, conn: Any) -> Request:
        target = head.target.decode("latin-1")
        parts = urlsplit(target)
        headers: dict[str, str] = {}
        for k, v in head.headers:
            name = k.decode("latin-1").lower()
            value = v.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        return cls(head.method.decode("latin-1"), parts.path, query, headers, body, conn)

    def segments(self) -> list[str]:
        return [unquote(s) for s in self.path.strip("/").split("/") if s]

    def json(self) -> Any:
        """The body as JSON; InvalidRequestError naming what is wrong."""
        ctype = self.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != JSON:
            # Also the CSRF rule: a form on another site cannot send application/json without a
            # CORS preflight, which this server never grants.
            raise E.InvalidRequestError(
                f"send the body as {JSON} (Content-Type: {ctype or 'none'})")
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise E.InvalidRequestError(f"the body is not valid JSON: {e}") from None


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def json_reply(doc: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Reply:
    body = _encode(doc).encode()
    return Reply(status, body, [("content-type", JSON), ("cache-control", "no-store"),
                                *(headers or [])])


# By wire code, for errors defined on other branches (50: access control's AuthorizationError).
_STATUS_BY_CODE = {50: 403}


def status_of(e: E.EdgebusError) -> int:
    for cls in type(e).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    if e.code in _STATUS_BY_CODE:
        return _STATUS_BY_CODE[e.code]
    return 503 if e.retriable else 500


def error_doc(e: E.EdgebusError) -> dict[str, Any]:
    return {"error": {"code": e.code, "name": type(e).__name__, "message": str(e),
                      "retriable": e.retriable}}


def error_reply(e: E.EdgebusError, status: int | None = None,
                headers: list[tuple[str, str]] | None = None) -> Reply:
    """The JSON error answer: {"error": {"code", "name", "message", "retriable"}}."""
    return json_reply(error_doc(e), status or status_of(e), headers)
