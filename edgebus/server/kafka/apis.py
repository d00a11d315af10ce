"""The Kafka API registry and dispatcher.

Each handler module (data, groups, admin, sasl; whichever exist) exposes `APIS: list[KafkaApi]`.
`collect()` gathers them; ApiVersions advertises exactly what is registered, so an API is
supported by adding it to a module's list and nothing else.

A handler is `handler(ctx, conn, header, request) -> response | DEFERRED`: `request` is the
decoded kio request entity of the header's version, the response a kio response entity of that
version (codec.build makes one), and DEFERRED means `ctx.answer(conn, header, response)` is
called later (a parked fetch, a durable produce, a join). A handler reports errors inside its
response, as Kafka does; an exception it raises closes the connection (Kafka has no generic
error response a client could read).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from edgebus.errors import EdgebusError, ProtocolError
from edgebus.server.kafka.codec import (
    API_VERSIONS_KEY,
    build,
    decode_header,
    decode_request,
    encode_response,
    response_module,
)
from edgebus.server.logrepeat import bound_repeats

if TYPE_CHECKING:
    from edgebus.server.kafka.context import KafkaContext
    from edgebus.server.listeners.stream import Connection

log = bound_repeats(logging.getLogger("edgebus.kafka"), logging.WARNING)  # a looping client: a few lines

DEFERRED = object()
NO_RESPONSE = object()  # Produce with acks=0: Kafka sends nothing back

Handler = Callable[["KafkaContext", "Connection", Any, Any], Any]
HANDLER_MODULES = ("data", "groups", "admin", "sasl", "acls", "txn", "txn_views", "cluster",
                   "offset_delete", "topic_partitions", "scram_users", "kip848", "epoch_api")


@dataclass(frozen=True)
class KafkaApi:
    api_key: int
    min_version: int
    max_version: int
    handler: Handler
    # May be called before SASL authentication (ApiVersions, SaslHandshake, SaslAuthenticate).
    before_auth: bool = False


def collect(modules: tuple[str, ...] = HANDLER_MODULES) -> dict[int, KafkaApi]:
    """api_key -> KafkaApi from every handler module that exists."""
    out: dict[int, KafkaApi] = {}
    for name in modules:
        try:
            mod = importlib.import_module(f"edgebus.server.kafka.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"edgebus.server.kafka.{name}":
                raise  # a module that exists but fails to import is a bug, not "absent"
            continue
        for api in getattr(mod, "APIS", ()):
            if api.api_key in out:
                raise RuntimeError(f"Kafka API {api.api_key} registered twice ({name})")
            out[api.api_key] = api
    return out


def api_versions_v0(ctx: KafkaContext, corr: int) -> bytes:
    """The ApiVersions v0 answer with UNSUPPORTED_VERSION and the supported list: what a broker
    says to a client whose ApiVersions version is newer than it knows (the client retries with
    the highest version in the list)."""
    mod = response_module(API_VERSIONS_KEY, 0)
    keys = tuple(build(mod.ApiVersion, api_key=a.api_key, min_version=a.min_version,
                       max_version=a.max_version) for a in sorted(ctx.apis.values(), key=lambda a: a.api_key))
    resp = build(mod.ApiVersionsResponse, error_code=ErrorCode.unsupported_version, api_keys=keys)
    return encode_response(API_VERSIONS_KEY, 0, corr, resp)


def dispatch(ctx: KafkaContext, conn: Connection, api_key: int, api_version: int, corr: int,
             data: memoryview) -> None:
    """Handle one Kafka request frame (`data`: header and body) from `conn`."""
    conn.requests += 1
    api = ctx.apis.get(api_key)
    if api is None:
        log.warning("%r called Kafka API %d, which is not supported; closing it", conn, api_key)
        conn.closed = True
        return
    if not api.min_version <= api_version <= api.max_version:
        if api_key == API_VERSIONS_KEY:
            conn.queue(api_versions_v0(ctx, corr))
            return
        # Below the floor is a client pinned to an old Kafka (kafka-python's api_version=(0, 10)
        # of many examples): Kafka 4's floor too, record batches (v2) only. Say so, since the
        # client itself shows only a timeout.
        hint = (" (a client pinned to a Kafka older than 0.11, e.g. kafka-python's "
                "api_version=(0, 10); drop the pin so that it negotiates)"
                if api_version < api.min_version else "")
        log.warning("%r called Kafka API %d (%s) v%d, outside %d..%d%s; closing it", conn,
                    api_key, api.handler.__name__, api_version, api.min_version,
                    api.max_version, hint)
        conn.closed = True
        return
    if not api.before_auth and getattr(conn, "kafka_auth_required", False):
        log.warning("%r called Kafka API %d before SASL authentication; closing it", conn, api_key)
        conn.closed = True
        return
    try:
        data = data.toreadonly()  # kio reads only read-only buffers
        header, size = decode_header(api_key, api_version, data)
        request = decode_request(api_key, api_version, data, size)
        answers = conn.answers
        result = api.handler(ctx, conn, header, request)
    except ProtocolError as e:
        log.warning("%r sent a malformed Kafka request (%s); closing it", conn, e)
        log.debug("the request: %s", bytes(data[:256]).hex())
        conn.closed = True
        return
    except EdgebusError as e:
        log.warning("%r: Kafka API %d failed (%s); closing it", conn, api_key, e)
        conn.closed = True
        return
    except Exception:  # a bug must not take the supervisor down for everyone
        log.exception("internal error handling Kafka API %d v%d from %r; closing it", api_key,
                      api_version, conn)
        conn.closed = True
        return
    if result is DEFERRED and conn.answers == answers:
        conn.awaiting = True  # answered later: hold this connection's next requests (stream.py)
        return
    if result is DEFERRED or result is NO_RESPONSE:
        return
    if type(result) is bytes:  # a handler that encoded its frame itself (a fast path)
        conn.queue(result)
        return
    try:
        conn.queue(encode_response(api_key, api_version, corr, result))
    except Exception:
        log.exception("cannot encode the answer to Kafka API %d v%d for %r; closing it", api_key,
                      api_version, conn)
        conn.closed = True
    if getattr(conn, "close_after_answer", False):  # a failed authentication: answered, then closed
        conn.flush()
        conn.closed = True
