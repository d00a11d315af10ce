"""What each native API needs, checked by the dispatcher before its handler runs (docs/SECURITY.md,
"What each request needs"), and the two answers filtered afterwards (METADATA and LIST_GROUPS
list only what the principal may describe).

A request is refused whole, with an AuthorizationError naming the first resource it may not
use; API_VERSIONS, SHM_ATTACH (the rings carry requests that are checked one by one) and
REPLICA_HELLO (the handshake that names a link) need nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgebus.acl.rules import Kind, Op
from edgebus.errors import AuthorizationError
from edgebus.protocol import messages as M
from edgebus.server.acl.authorizer import SLOTS, Authorizer

Check = Callable[[Any, Any], None]
Filter = Callable[[Any, Any, Any], Any]

TOPIC_READ = SLOTS[(Kind.TOPIC, Op.READ)]
TOPIC_WRITE = SLOTS[(Kind.TOPIC, Op.WRITE)]
TOPIC_CREATE = SLOTS[(Kind.TOPIC, Op.CREATE)]
TOPIC_DELETE = SLOTS[(Kind.TOPIC, Op.DELETE)]
TOPIC_ALTER = SLOTS[(Kind.TOPIC, Op.ALTER)]
TOPIC_DESCRIBE = SLOTS[(Kind.TOPIC, Op.DESCRIBE)]
GROUP_READ = SLOTS[(Kind.GROUP, Op.READ)]
GROUP_DESCRIBE = SLOTS[(Kind.GROUP, Op.DESCRIBE)]
CLUSTER_STATUS = SLOTS[(Kind.CLUSTER, Op.STATUS)]


def build_checks(a: Authorizer) -> dict[int, Check]:
    """API key -> check(conn, request body); every API that touches a topic, a group or the
    cluster is listed (tests/acl/test_matrix.py goes through them)."""
    check = a.check

    def topics(slot: int, parts: Any, conn: Any) -> None:
        seen = None
        for p in parts:
            if p.topic != seen:  # consecutive partitions of one topic: one look-up
                seen = p.topic
                check(conn, slot, seen)

    def fetch(conn: Any, req: Any) -> None:
        # Every consumer's every poll: the connection's cached "yes" for each topic is read
        # here, without a call per partition (the same test as Authorizer.check's).
        st = conn.acl
        if st is not None and st.gen == a.gen and st.node is conn.node:
            if st.all:
                return
            ok = st.cache[TOPIC_READ]
            for p in req.partitions:
                if not ok.get(p.topic):
                    break
            else:
                return
        topics(TOPIC_READ, req.partitions, conn)

    def group(slot: int) -> Check:
        return lambda conn, req: check(conn, slot, req.group_id)

    def named(slot: int) -> Check:
        return lambda conn, req: check(conn, slot, req.name)

    def offset_commit(conn: Any, req: Any) -> None:
        check(conn, GROUP_READ, req.group_id)
        topics(TOPIC_READ, req.offsets, conn)

    def reset_offsets(conn: Any, req: Any) -> None:
        check(conn, GROUP_READ, req.group_id)
        check(conn, TOPIC_READ, req.topic)

    table: dict[Any, Check] = {
        M.Api.PRODUCE: lambda conn, req: check(conn, TOPIC_WRITE, req.topic),
        M.Api.FETCH: fetch,
        M.Api.FETCH_STANDING: fetch,
        M.Api.LIST_OFFSETS: lambda conn, req: topics(TOPIC_DESCRIBE, req.partitions, conn),
        M.Api.CREATE_TOPIC: named(TOPIC_CREATE),
        M.Api.DELETE_TOPIC: named(TOPIC_DELETE),
        M.Api.ALTER_TOPIC_CONFIG: named(TOPIC_ALTER),
        M.Api.STATUS: lambda conn, req: check(conn, CLUSTER_STATUS, "*"),
        # Producer ids, transactional ids and the partitions they write: a cluster read as STATUS.
        M.Api.LIST_TRANSACTIONS: lambda conn, req: check(conn, CLUSTER_STATUS, "*"),
        M.Api.JOIN_GROUP: group(GROUP_READ),
        M.Api.SYNC_GROUP: group(GROUP_READ),
        M.Api.HEARTBEAT: group(GROUP_READ),
        M.Api.LEAVE_GROUP: group(GROUP_READ),
        M.Api.OFFSET_COMMIT: offset_commit,
        M.Api.OFFSET_FETCH: group(GROUP_DESCRIBE),
        M.Api.DESCRIBE_GROUP: group(GROUP_DESCRIBE),
        M.Api.RESET_OFFSETS: reset_offsets,
        M.Api.REPLICA_APPEND: lambda conn, req: check(conn, TOPIC_WRITE, req.topic),
        M.Api.PROMOTE_TOPIC: named(TOPIC_ALTER),
        M.Api.REPLICA_FETCH: lambda conn, req: topics(TOPIC_READ, req.partitions, conn),
        # A gap record and a compressed append write the mirror as REPLICA_APPEND does.
        M.Api.REPLICA_GAP: lambda conn, req: check(conn, TOPIC_WRITE, req.topic),
        M.Api.REPLICA_APPEND_COMPRESSED: lambda conn, req: check(conn, TOPIC_WRITE, req.topic),
        # Transactions, as on the Kafka path (kafka/txn.py): write on the partitions a
        # transaction adds, what OffsetCommit needs for the offsets it commits.
        M.Api.ADD_PARTITIONS_TO_TXN: lambda conn, req: topics(TOPIC_WRITE, req.partitions, conn),
        M.Api.TXN_OFFSET_COMMIT: offset_commit,
    }
    return {int(k): v for k, v in table.items()}


# APIs that need no permission of their own (listed so that a new API is a decision, not a gap).
# INIT_PRODUCER_ID and END_TXN touch only the producer's own id and transaction (a transactional
# id is no resource of the rules; what a transaction writes is checked when it is added).
UNCHECKED = frozenset(int(k) for k in (M.Api.API_VERSIONS, M.Api.SHM_ATTACH, M.Api.REPLICA_HELLO,
                                       M.Api.METADATA, M.Api.LIST_GROUPS, M.Api.INIT_PRODUCER_ID,
                                       M.Api.END_TXN))


def build_filters(a: Authorizer) -> dict[int, Filter]:
    """API key -> filter(conn, request, response): METADATA shows only topics the principal may
    describe (one asked for by name comes back with AuthorizationError's code, whether it
    exists or not, so that names do not leak); LIST_GROUPS only groups it may describe."""

    def metadata(conn: Any, req: Any, resp: Any) -> Any:
        if not isinstance(resp, M.MetadataResponse):
            return resp
        out = []
        for t in resp.topics:
            if not req.topics:  # a listing: what it may not describe is left out, uncounted
                if a.allowed(conn, Kind.TOPIC, Op.DESCRIBE, t.name):
                    out.append(t)
                continue
            try:  # asked for by name: a denial like any other (counted, logged)
                a.check(conn, TOPIC_DESCRIBE, t.name)
                out.append(t)
            except AuthorizationError as e:
                out.append(M.TopicMetadata(t.name, e.code, str(e), [], []))
        resp.topics = out
        return resp

    def list_groups(conn: Any, req: Any, resp: Any) -> Any:
        resp.groups = [g for g in resp.groups
                       if a.allowed(conn, Kind.GROUP, Op.DESCRIBE, g.group_id)]
        return resp

    return {int(M.Api.METADATA): metadata, int(M.Api.LIST_GROUPS): list_groups}
