"""What a Kafka API handler gets of the supervisor: `KafkaContext`.

A handler is `handler(ctx, conn, header, request) -> response | DEFERRED` (apis.py). Through the
context it reaches the log, the supervisor's own data, admin and group handlers (so a Kafka
request and a native one go through the same checks and the same parked-fetch and group-commit
machinery), the loop (LoopApi) and the settings; never the Broker itself. A deferred answer is
given later with `ctx.answer(conn, header, response)`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgebus.server.kafka.codec import encode_response

if TYPE_CHECKING:
    from edgebus.config import KafkaSettings
    from edgebus.log.manager import LogManager
    from edgebus.server.durable import DurableAcks
    from edgebus.server.groups.handlers import GroupHandlers
    from edgebus.server.handlers.admin import AdminHandlers
    from edgebus.server.handlers.data import DataHandlers
    from edgebus.server.kafka.apis import KafkaApi
    from edgebus.server.listeners.stream import Connection
    from edgebus.server.service import LoopApi
    from edgebus.server.stats import Stats

log = logging.getLogger("edgebus.kafka")

# The one broker Kafka clients see: edgebus is a single node (docs/KAFKA.md).
NODE_ID = 0
CLUSTER_ID = "edgebus"


@dataclass(eq=False)
class KafkaContext:
    api: LoopApi
    logs: LogManager
    data: DataHandlers
    admin: AdminHandlers
    groups: GroupHandlers
    durable: DurableAcks
    stats: Stats
    settings: KafkaSettings
    # api_key -> KafkaApi: what ApiVersions advertises and the dispatcher serves (apis.py).
    apis: dict[int, KafkaApi] = field(default_factory=dict)
    # (host, port) clients are told to connect to (Metadata); set when the listener binds.
    advertised: tuple[str, int] = ("127.0.0.1", 9092)
    # Services of the Kafka APIs that keep state (producer ids, fetch waiters, SASL users),
    # by name, so that handler modules find each other's without importing the Broker.
    parts: dict[str, Any] = field(default_factory=dict)

    def answer(self, conn: Connection, header: Any, response: Any) -> None:
        """Send `response` (a kio response entity of the request's version) to a request a
        handler deferred (returned DEFERRED for). Nothing happens for a closed connection."""
        if conn.closed:
            return
        try:
            data = encode_response(header.request_api_key, header.request_api_version,
                                   header.correlation_id, response)
        except Exception:
            log.exception("cannot encode the %s answer to %r; closing it", type(response).__name__, conn)
            self.api.close(conn)
            return
        self.api.answer(conn, header.correlation_id, data)
