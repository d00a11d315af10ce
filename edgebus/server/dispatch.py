"""The dispatch table: every API the supervisor serves, and the one place a request is handled.

`build_table` lists each API with its handler, explicitly. `Dispatcher.dispatch_frame` is what
every listener calls with a request frame (LoopApi.dispatch). A handler is called as
`handler(conn, corr, body)` and returns a response body, an encoded response frame (bytes, queued
as it is), DEFERRED (answered later through LoopApi.answer) or NO_RESPONSE; an EdgebusError it
raises is the answer. The PRODUCE fast path decodes the body with the struct-level decoder and
calls DataHandlers.produce_fields without the request dataclass.

Access control is here too, so that no way in can skip it: with an Authorizer, each API's check
(edgebus/server/acl/checks.py) runs before its handler, on the fast path as on the generic one,
and METADATA and LIST_GROUPS answers are filtered after it (docs/SECURITY.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgebus.errors import EdgebusError, NotAuthenticatedError, ProtocolError, UnknownServerError
from edgebus.fastpath.supervisor import decode_produce, decode_request
from edgebus.protocol import messages as M
from edgebus.protocol.framing import RequestFrame
from edgebus.server.acl import Authorizer, build_checks, build_filters
from edgebus.server.acl.checks import TOPIC_WRITE

if TYPE_CHECKING:
    from edgebus.server.group_service import LazyGroups
    from edgebus.server.handlers.admin import AdminHandlers
    from edgebus.server.handlers.data import DataHandlers
    from edgebus.server.handlers.replica import ReplicaHandlers
    from edgebus.server.lazy import OnFirstUse
    from edgebus.server.listeners.shm_transport import ShmTransport
    from edgebus.server.listeners.stream import Connection
    from edgebus.server.loop import Loop

log = logging.getLogger("edgebus.dispatch")

# Handler results besides a body: the answer comes later / there is none (acks=none).
DEFERRED = object()
NO_RESPONSE = object()

Handler = Callable[[Any, int, Any], Any]
_PRODUCE = int(M.Api.PRODUCE)


# Replication, the destination side (handlers/replica.py): API -> method of ReplicaHandlers, made
# at the first such request (server/lazy.py): a supervisor no peer replicates to never loads it.
REPLICA_APIS = {
    M.Api.REPLICA_HELLO: "hello",
    M.Api.REPLICA_APPEND: "append",
    M.Api.PROMOTE_TOPIC: "promote",
    M.Api.REPLICA_FETCH: "fetch",
    M.Api.REPLICA_GAP: "gap",
    M.Api.REPLICA_APPEND_COMPRESSED: "append_compressed",
}
# Transactions and idempotent producers' ids, the native APIs (handlers/txn.py TxnHandlers.table):
# made at the first such request (server/lazy.py), or at start when a transaction state exists.
TXN_APIS = {
    M.Api.INIT_PRODUCER_ID: "init_producer_id",
    M.Api.ADD_PARTITIONS_TO_TXN: "add_partitions",
    M.Api.TXN_OFFSET_COMMIT: "txn_offset_commit",
    M.Api.END_TXN: "end_txn",
    M.Api.LIST_TRANSACTIONS: "list_transactions",
}
# What a replica listener's connection may send before REPLICA_HELLO succeeds (listeners/tcp.py;
# handlers/replica.py widens it): here, so that a listening supervisor need not load the handlers.
HANDSHAKE_APIS = frozenset({int(M.Api.API_VERSIONS), int(M.Api.REPLICA_HELLO)})


def build_table(data: DataHandlers, admin: AdminHandlers, groups: LazyGroups,
                shm: ShmTransport, replica: OnFirstUse[ReplicaHandlers]) -> dict[int, Handler]:
    """API key -> handler, for every API the supervisor serves."""
    table: dict[Any, Handler] = {
        # data plane (handlers/data.py)
        M.Api.PRODUCE: data.produce,
        M.Api.FETCH: data.fetch,
        M.Api.FETCH_STANDING: data.fetch_standing,
        M.Api.LIST_OFFSETS: data.list_offsets,
        # control plane (handlers/admin.py)
        M.Api.API_VERSIONS: admin.api_versions,
        M.Api.METADATA: admin.metadata,
        M.Api.CREATE_TOPIC: admin.create_topic,
        M.Api.DELETE_TOPIC: admin.delete_topic,
        M.Api.ALTER_TOPIC_CONFIG: admin.alter_topic_config,
        M.Api.STATUS: admin.status,
        # transports (listeners/shm_transport.py)
        M.Api.SHM_ATTACH: shm.attach,
    }
    out = {int(k): h for k, h in table.items()}
    # consumer groups (groups/handlers.py), made at the first (group_service.py)
    groups.install(out)
    replica.install(out, {int(k): name for k, name in REPLICA_APIS.items()})
    return out


class Dispatcher:
    def __init__(self, loop: Loop, table: dict[int, Handler],
                 produce_fields: Callable[..., Any], acl: Authorizer | None = None) -> None:
        self.table = table
        self._queue_answer = loop.queue_answer  # bound once: called for every answer
        # Access control (edgebus/server/acl/): the check of each API before its handler, and
        # the answers filtered after it; none without an Authorizer.
        self.acl = acl
        self.checks: dict[int, Callable[[Any, Any], None]] = {}
        self.filters: dict[int, Callable[[Any, Any, Any], Any]] = {}
        self._produce = produce_fields
        if acl is not None:
            self._acl_check = acl.check
            self.checks = build_checks(acl)
            self.filters = build_filters(acl)

    def _produce_checked(self, conn: Connection, corr: int, topic: str, *rest: Any) -> Any:
        # The PRODUCE fast path's check when the connection's cache has no "yes" for the topic
        # (dispatch_frame looks first): the same slot and cache as the generic path's.
        self._acl_check(conn, TOPIC_WRITE, topic)
        return self._produce(conn, corr, topic, *rest)

    def dispatch_frame(self, conn: Connection, api_key: int, api_version: int, corr: int,
                       body: memoryview) -> None:
        """Handle one request (socket and ring paths). A PRODUCE of version 0 whose body the
        struct-level decoder takes skips the request dataclass and returns its answer encoded;
        everything else (malformed bodies included) goes through the generic codec."""
        conn.requests += 1
        if conn.allowed is not None and api_key not in conn.allowed:
            self._queue_answer(conn, corr, NotAuthenticatedError(
                f"{api_name(api_key)} is not allowed on this connection"
                + ("" if conn.node else " before REPLICA_HELLO")))
            return
        fields = decode_produce(body) if api_key == _PRODUCE and api_version == 0 else None
        # _handle's work, without its call (once per request)
        try:
            if fields is not None:
                # A connection's cached "yes" for its topic skips the checked wrapper: with
                # one record per request that wrapper and the check's call were ~1 us of
                # the supervisor's ~30 (issue 15's 3 %).
                st = conn.acl
                acl = self.acl
                if acl is not None and (st is None or st.gen != acl.gen or st.node is not conn.node
                                        or not (st.all or st.cache[TOPIC_WRITE].get(fields[0]))):
                    result = self._produce_checked(conn, corr, *fields)
                else:
                    result = self._produce(conn, corr, *fields)
            else:
                result = self._decode_and_handle(conn, corr,
                                                 RequestFrame(api_key, api_version, corr, body))
        except Exception as e:
            self._failed(conn, api_key, corr, e)
            return
        if type(result) is bytes:
            conn.queue(result)
        elif result is not DEFERRED and result is not NO_RESPONSE:
            self._queue_answer(conn, corr, result)

    def _decode_and_handle(self, conn: Connection, corr: int, req: RequestFrame) -> Any:
        body = decode_request(req)
        handler = self.table.get(req.api_key)
        if handler is None:
            raise UnknownServerError(f"API {req.api_key} is not served")
        check = self.checks.get(req.api_key)
        if check is not None:
            check(conn, body)  # AuthorizationError is the answer (dispatch_frame's _handle)
        result = handler(conn, corr, body)
        post = self.filters.get(req.api_key)
        return result if post is None else post(conn, body, result)

    def _handle(self, conn: Connection, api_key: int, corr: int, handler: Any,
                args: tuple[Any, ...]) -> None:
        """Run `handler(conn, corr, *args)` and queue what it returns (the connection's reader
        re-arms after its turn); an error it raises is the answer."""
        try:
            result = handler(conn, corr, *args)
        except Exception as e:
            self._failed(conn, api_key, corr, e)
            return
        if result is DEFERRED or result is NO_RESPONSE:
            return
        if type(result) is bytes:
            conn.queue(result)
            return
        self._queue_answer(conn, corr, result)

    def _failed(self, conn: Connection, api_key: int, corr: int, e: Exception) -> None:
        """What a handler raised is the answer; a malformed request also closes the connection."""
        if isinstance(e, ProtocolError):
            log.warning("%r sent a malformed %s request (%s); closing it", conn, api_name(api_key), e)
            self._queue_answer(conn, corr, e)
            conn.closed = True
        elif isinstance(e, EdgebusError):
            self._queue_answer(conn, corr, e)
        else:  # a bug must not take down the supervisor for everyone
            log.error("internal error handling %s from %r", api_name(api_key), conn, exc_info=e)
            self._queue_answer(conn, corr, UnknownServerError(f"internal error: {e}"))


def api_name(key: int) -> str:
    try:
        return M.Api(key).name
    except ValueError:
        return f"api#{key}"
