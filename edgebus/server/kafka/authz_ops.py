"""Kafka's "authorized operations" bit fields (KIP-430): what a principal may do with a topic, a
group or the cluster, for Metadata (`include_topic_authorized_operations`,
`include_cluster_authorized_operations`) and DescribeGroups (`include_authorized_operations`):
confluent-kafka's `describe_topics` / `describe_cluster` / `describe_consumer_groups(...,
include_authorized_operations=True)`, and the UIs built on them.

Bit n is Kafka's AclOperation n, set when the supervisor's one Authorizer allows the edgebus
operation it maps to (the same mapping as the ACL APIs, acls.py): DESCRIBE_CONFIGS as describe,
ALTER_CONFIGS as alter; on the cluster DESCRIBE and DESCRIBE_CONFIGS as status, ALTER,
ALTER_CONFIGS and CLUSTER_ACTION as admin, IDEMPOTENT_WRITE always (a producer id needs no right
here). Without access rules every operation of the resource is set, as Kafka answers without an
authorizer.
"""

from __future__ import annotations

from typing import Any

from edgebus.acl.rules import Kind, Op
from edgebus.server.kafka.authz import acl_of

NOT_ASKED = -2147483648  # Kafka's value when the request did not ask (INT32_MIN)
READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE = 3, 4, 5, 6, 7, 8
CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE = 9, 10, 11, 12
_OPS: dict[Kind, dict[int, Op | None]] = {
    Kind.TOPIC: {READ: Op.READ, WRITE: Op.WRITE, CREATE: Op.CREATE, DELETE: Op.DELETE,
                 ALTER: Op.ALTER, DESCRIBE: Op.DESCRIBE, DESCRIBE_CONFIGS: Op.DESCRIBE,
                 ALTER_CONFIGS: Op.ALTER},
    Kind.GROUP: {READ: Op.READ, DESCRIBE: Op.DESCRIBE, DELETE: Op.DELETE},
    Kind.CLUSTER: {DESCRIBE: Op.STATUS, DESCRIBE_CONFIGS: Op.STATUS, ALTER: Op.ADMIN,
                   ALTER_CONFIGS: Op.ADMIN, CLUSTER_ACTION: Op.ADMIN, IDEMPOTENT_WRITE: None},
}


def authorized_operations(ctx: Any, conn: Any, kind: Kind, name: str) -> int:
    """The bit field of the Kafka operations `conn` may do on the resource."""
    a = acl_of(ctx)
    bits = 0
    for code, op in _OPS[kind].items():
        if op is None or a is None or a.allowed(conn, kind, op, name):
            bits |= 1 << code
    return bits
