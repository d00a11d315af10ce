"""KIP-848's consumer group protocol (`group.protocol=consumer`), refused with an answer a client
can act on.

edgebus serves the classic group protocol only (JoinGroup, SyncGroup, Heartbeat: groups.py).
A client configured for the new one sends ConsumerGroupHeartbeat. Were the API left out of
ApiVersions, librdkafka (2.4 to 2.13 at least) would mark its coordinator dead and query it
again forever: a consumer that reads nothing and reports nothing. So the API is advertised and
every heartbeat answered UNSUPPORTED_VERSION with a message naming the setting, which both
librdkafka ("ConsumerGroupHeartbeat fatal error: Broker: Unsupported version", a fatal error
at the next poll) and the Java client (UnsupportedVersionException, "set group.protocol=classic")
treat as fatal. The supervisor logs the client and group once per client (bounded repeats).
Nothing is stored: no member, no group.
"""

from __future__ import annotations

import logging
from typing import Any

from edgebus.server.kafka import errcodes as E
from edgebus.server.kafka.apis import KafkaApi
from edgebus.server.kafka.shape import response
from edgebus.server.logrepeat import bound_repeats

log = bound_repeats(logging.getLogger("edgebus.kafka"), logging.WARNING)

CONSUMER_GROUP_HEARTBEAT = 68
MESSAGE = ("edgebus serves the classic consumer group protocol only (KIP-848's "
           "ConsumerGroupHeartbeat is not supported): set group.protocol=classic (the default) "
           "on this consumer")


def consumer_group_heartbeat(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    log.warning("%r (client id %r) asked to join group %r with group.protocol=consumer "
                "(KIP-848); answered UNSUPPORTED_VERSION: only group.protocol=classic is served",
                conn, header.client_id, req.group_id)
    return response(header, error_code=E.UNSUPPORTED_VERSION, error_message=MESSAGE,
                    member_id=None, member_epoch=-1, heartbeat_interval=0, assignment=None)


# v0 (librdkafka 2.4-2.10, Kafka 3.7's Java client) and v1 (librdkafka 2.11+, Kafka 4).
APIS: list[KafkaApi] = [KafkaApi(CONSUMER_GROUP_HEARTBEAT, 0, 1, consumer_group_heartbeat)]
