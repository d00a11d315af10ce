"""Kafka's group membership APIs on edgebus's own group coordinator.

Kafka consumer groups and edgebus groups are one thing: every request here is turned into the
coordinator's request (edgebus/server/groups/coordinator.py), so a Kafka consumer and a native
`Consumer` in the same group share its partitions, its generations and (offsets.py) its committed
offsets.

Who computes the assignment depends on the protocols the members offer:
- server-assigned (a member of a new group offers one of `PROTOCOLS`, which map onto edgebus's
  assignors): edgebus assigns in the coordinator (it knows every topic's partition count, and
  native members have no assignor code). JoinGroup names as leader an id that is no member's
  (`LEADER`): every Kafka client takes the follower path, sends an empty SyncGroup, and receives
  the coordinator's assignment, encoded as Kafka's ConsumerProtocolAssignment. Each member's
  subscription comes from its protocol metadata (ConsumerProtocolSubscription), and each member
  is told the chosen assignor by its own name for it. Native and Kafka members can share it.
- leader-assigned (none of them: faust's "faust", "cooperative-sticky", a custom assignor):
  Kafka's classic protocol (edgebus/server/groups/leader.py). A real member leads, gets every
  member's metadata and sends the assignments in its SyncGroup; edgebus passes the bytes on.

A member that does not fit its group (a native member in a leader-assigned group, or no
protocol in common) gets INCONSISTENT_GROUP_PROTOCOL; a full group GROUP_MAX_SIZE_REACHED.
Protocol types other than "consumer" (Kafka Connect's) are refused. Static membership
(`group.instance.id`) is kept (edgebus/server/groups/static.py): a restarted process with the
same instance id takes its member's place without a rebalance.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from edgebus.acl.rules import Kind, Op
from edgebus.errors import EdgebusError
from edgebus.protocol import groups as G
from edgebus.server.groups.model import ClassicJoinResponse, Offer
from edgebus.server.kafka import errcodes as E
from edgebus.server.kafka.apis import KafkaApi
from edgebus.server.kafka.authz import DENIED_CODE, refused
from edgebus.server.kafka.consumer_protocol import (
    decode_assignment,
    decode_subscription,
    encode_assignment,
)
from edgebus.server.kafka.group_common import (
    DEFERRED,
    PROTOCOL_TYPE,
    answer,
    coordinator_address,
    groups_of,
)
from edgebus.server.kafka.group_offsets import offset_commit, offset_fetch
from edgebus.server.kafka.group_views import delete_groups, describe_groups, list_groups
from edgebus.server.kafka.shape import response

GROUP, READ, DESCRIBE = Kind.GROUP, Op.READ, Op.DESCRIBE
GROUP_DENIED = DENIED_CODE[Kind.GROUP]
log = logging.getLogger("edgebus.kafka.groups")

# The leader id every Kafka member is told: no member has it, so none computes an assignment.
LEADER = "edgebus-coordinator"
# Kafka assignor names (librdkafka, kafka-python, aiokafka, Java; kafkajs's own name) -> the
# edgebus assignor that gives the same kind of assignment.
PROTOCOLS = {
    "range": "range",
    "roundrobin": "roundrobin",
    "sticky": "sticky",
    "RoundRobinAssigner": "roundrobin",  # kafkajs
}
# Protocols one JoinGroup may offer: bounds what a member makes the coordinator hold (each
# protocol's metadata is bounded by the frame).
MAX_PROTOCOLS = 16
# Protocol metadata one JoinGroup may carry, all protocols together: a leader-assigned group keeps
# the bytes for its leader, so this bounds what each member makes the coordinator hold (faust's
# metadata, the largest we know, is a few KiB of JSON per member).
MAX_MEMBER_METADATA = 1 << 20
# FindCoordinator key types.
KEY_GROUP, KEY_TRANSACTION = 0, 1


# --- FindCoordinator -----------------------------------------------------------------------------
def find_coordinator(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    node_id, host, port = coordinator_address(ctx)
    key_type = getattr(req, "key_type", KEY_GROUP)
    if key_type in (KEY_GROUP, KEY_TRANSACTION):  # this broker coordinates both (txn.py)
        err, msg = E.NONE, None
        # A group's coordinator needs describe on the group, as in Kafka. A transactional id
        # is no resource of edgebus's rules: what a transaction touches is checked (txn.py).
        keys = req.coordinator_keys if header.request_api_version >= 4 else [req.key]
        why = {k: refused(ctx, conn, GROUP, DESCRIBE, k) if key_type == KEY_GROUP else None
               for k in keys}
        if header.request_api_version >= 4:
            return response(header, coordinators=[
                dict(key=k, node_id=-1 if why[k] else node_id, host="" if why[k] else host,
                     port=-1 if why[k] else port, error_code=GROUP_DENIED if why[k] else err,
                     error_message=why[k]) for k in keys])
        if why[req.key]:
            return response(header, error_code=GROUP_DENIED, error_message=why[req.key],
                            node_id=-1, host="", port=-1)
    else:
        err, msg = E.INVALID_REQUEST, (f"key type {key_type}: edgebus has only group "
                                       "coordinators (no transactions)")
        node_id, host, port = -1, "", -1
    if header.request_api_version >= 4:
        return response(header, coordinators=[
            dict(key=k, node_id=node_id, host=host, port=port, error_code=err, error_message=msg)
            for k in req.coordinator_keys])
    return response(header, error_code=err, error_message=msg, node_id=node_id, host=host,
                    port=port)


# --- JoinGroup -----------------------------------------------------------------------------------
def _join_error(header: Any, code: int, member_id: str) -> Any:
    return response(header, error_code=code, generation_id=-1, protocol_type=PROTOCOL_TYPE,
                    protocol_name=None if header.request_api_version >= 7 else "", leader="",
                    member_id=member_id, members=[])  # nullable only from v7


def _native_join(header: Any, req: Any) -> tuple[G.JoinGroupRequest | None, Offer | None, int]:
    """The coordinator's JoinGroupRequest and the member's protocols (Offer) for a Kafka one, or
    (None, None, Kafka error code). With no protocol edgebus knows, the request has no
    assignors and the subscription's topics are read when the metadata is the consumer
    protocol's (only for topic_changed and the views; the bytes go to the leader as they are)."""
    if not req.group_id or len(req.group_id) > G.MAX_GROUP_ID:
        return None, None, E.INVALID_GROUP_ID
    if req.protocol_type != PROTOCOL_TYPE:
        return None, None, E.INCONSISTENT_GROUP_PROTOCOL
    session = int(req.session_timeout.total_seconds() * 1000)
    rebalance = getattr(req, "rebalance_timeout", None)
    rebalance_ms = int(rebalance.total_seconds() * 1000) if rebalance is not None else -1
    if rebalance_ms < 0:  # v0 has none; Kafka then uses the session timeout
        rebalance_ms = session
    if not (G.MIN_SESSION_TIMEOUT_MS <= session <= G.MAX_SESSION_TIMEOUT_MS
            and G.MIN_SESSION_TIMEOUT_MS <= rebalance_ms <= G.MAX_REBALANCE_TIMEOUT_MS):
        return None, None, E.INVALID_SESSION_TIMEOUT
    if not req.protocols or len(req.protocols) > MAX_PROTOCOLS:
        log.warning("group %s: a JoinGroup offers %d protocols (1 to %d)", req.group_id,
                    len(req.protocols), MAX_PROTOCOLS)
        return None, None, E.INCONSISTENT_GROUP_PROTOCOL
    size = sum(len(p.metadata) for p in req.protocols)
    if size > MAX_MEMBER_METADATA:
        log.warning("group %s: a JoinGroup carries %d bytes of protocol metadata, at most %d",
                    req.group_id, size, MAX_MEMBER_METADATA)
        return None, None, E.INVALID_REQUEST
    assignors: list[str] = []
    sub = None
    for p in req.protocols:
        name = PROTOCOLS.get(p.name)
        if name is None:
            continue
        if sub is None:  # every protocol carries the same subscription; decode the first
            try:
                sub = decode_subscription(p.metadata)
            except EdgebusError as e:
                log.warning("group %s: %s", req.group_id, e)
                return None, None, E.INCONSISTENT_GROUP_PROTOCOL
        if name not in assignors:
            assignors.append(name)
    if sub is None:  # leader-assigned: the metadata is the client's own
        try:
            sub = decode_subscription(req.protocols[0].metadata)
        except EdgebusError:
            sub = None
    offer = Offer(req.protocol_type, tuple((p.name, bytes(p.metadata)) for p in req.protocols),
                  getattr(req, "group_instance_id", None))
    owned: dict[str, list[int]] = {}
    for topic, part in sub.owned if sub is not None else ():
        owned.setdefault(topic, []).append(part)
    return G.JoinGroupRequest(
        req.group_id, req.member_id, header.client_id or "", session, rebalance_ms,
        list(sub.topics) if sub is not None else [], assignors,
        [G.TopicPartitions(t, ps) for t, ps in owned.items()],
    ), offer, E.NONE


def join_group(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    if refused(ctx, conn, GROUP, READ, req.group_id):
        return _join_error(header, GROUP_DENIED, req.member_id)
    native, offer, err = _native_join(header, req)
    if native is None or offer is None:
        return _join_error(header, err, req.member_id)
    offer = dataclasses.replace(offer, client_host=client_host(conn))
    # The member's own name for each edgebus assignor (its first that maps onto it).
    names: dict[str, str] = {}
    for p in req.protocols:
        names.setdefault(PROTOCOLS.get(p.name, ""), p.name)

    def reply(r: Any) -> None:
        if isinstance(r, BaseException):
            answer(ctx, conn, header, _join_error(header, E.code_of(r, E.INVALID_REQUEST),
                                                  req.member_id))
        elif isinstance(r, ClassicJoinResponse):
            answer(ctx, conn, header, response(
                header, error_code=E.NONE, generation_id=r.generation,
                protocol_type=PROTOCOL_TYPE, protocol_name=r.protocol, leader=r.leader,
                member_id=r.member_id, members=[
                    dict(member_id=mid, group_instance_id=iid, metadata=md)
                    for mid, iid, md in r.members]))
        else:
            answer(ctx, conn, header, response(
                header, error_code=E.NONE, generation_id=r.generation,
                protocol_type=PROTOCOL_TYPE, protocol_name=names.get(r.assignor, r.assignor),
                leader=LEADER, member_id=r.member_id, members=[]))

    gh = groups_of(ctx)
    try:
        gh.coordinator.join(conn.id, getattr(conn, "pid", -1), native, reply, offer)
    except EdgebusError as e:
        return _join_error(header, E.code_of(e, E.INVALID_REQUEST), req.member_id)
    return DEFERRED


def client_host(conn: Any) -> str:
    """The member's host as Kafka's DescribeGroups gives it: "/" and the peer's IP address
    (Java's InetAddress.toString() with no host name), "" when the peer is unknown."""
    addr = getattr(conn, "peer_addr", "?")  # "host:port" (listeners/kafka.py)
    host = addr.rpartition(":")[0] if ":" in addr else ""
    return f"/{host}" if host else ""


# --- SyncGroup / Heartbeat / LeaveGroup ----------------------------------------------------------
def sync_group(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    if getattr(req, "protocol_type", None) not in (None, PROTOCOL_TYPE):
        return response(header, error_code=E.INCONSISTENT_GROUP_PROTOCOL, assignment=b"")
    if refused(ctx, conn, GROUP, READ, req.group_id):
        return response(header, error_code=GROUP_DENIED, assignment=b"")
    coord = groups_of(ctx).coordinator
    if coord.is_leader_assigned(req.group_id):
        return _sync_classic(ctx, conn, header, req)
    try:
        r = coord.sync(
            G.SyncGroupRequest(req.group_id, req.generation_id, req.member_id))
    except EdgebusError as e:
        return response(header, error_code=E.code_of(e), assignment=b"")
    tps = [(t.topic, p) for t in r.assignment for p in t.partitions]
    # protocol_type/name (v5) are left null: "unknown" to the client, which then skips its check.
    return response(header, error_code=E.NONE, protocol_type=PROTOCOL_TYPE,
                    assignment=encode_assignment(tps))


def _sync_classic(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    """SyncGroup of a leader-assigned group: the leader's assignments pass through as bytes; a
    follower's answer waits for them (DEFERRED)."""
    coord = groups_of(ctx).coordinator
    blobs = {a.member_id: bytes(a.assignment) for a in req.assignments}
    decoded = {mid: tps for mid, b in blobs.items() if (tps := decode_assignment(b)) is not None}

    def reply(r: Any) -> None:
        if isinstance(r, BaseException):
            answer(ctx, conn, header, response(header, error_code=E.code_of(r), assignment=b""))
            return
        g = coord.groups.get(req.group_id)
        answer(ctx, conn, header, response(
            header, error_code=E.NONE, protocol_type=PROTOCOL_TYPE,
            protocol_name=g.assignor if g is not None else None, assignment=r))

    try:
        coord.sync_classic(req.group_id, req.generation_id, req.member_id, blobs, reply, decoded)
    except EdgebusError as e:
        return response(header, error_code=E.code_of(e), assignment=b"")
    return DEFERRED


def heartbeat(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    if refused(ctx, conn, GROUP, READ, req.group_id):
        return response(header, error_code=GROUP_DENIED)
    try:
        groups_of(ctx).coordinator.heartbeat(
            G.HeartbeatRequest(req.group_id, req.generation_id, req.member_id))
    except EdgebusError as e:
        return response(header, error_code=E.code_of(e))
    return response(header, error_code=E.NONE)


def leave_group(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    coord = groups_of(ctx).coordinator
    if refused(ctx, conn, GROUP, READ, req.group_id):
        return response(header, error_code=GROUP_DENIED, members=[])
    if header.request_api_version < 3:
        try:
            coord.leave(G.LeaveGroupRequest(req.group_id, req.member_id))
        except EdgebusError as e:
            return response(header, error_code=E.code_of(e))
        return response(header, error_code=E.NONE)
    out = []
    for m in req.members:
        # A static member may be named by its instance id alone (KIP-345).
        mid = m.member_id or (coord.member_of_instance(req.group_id, m.group_instance_id)
                              if m.group_instance_id else "")
        try:
            coord.leave(G.LeaveGroupRequest(req.group_id, mid))
            code = E.NONE
        except EdgebusError as e:
            code = E.code_of(e)
        out.append(dict(member_id=m.member_id, group_instance_id=m.group_instance_id,
                        error_code=code))
    return response(header, error_code=E.NONE, members=out)


# Versions: those kio generates (Kafka 4's ranges), less OffsetCommit v10 / OffsetFetch v10
# (topic ids in place of names, KIP-848's consumer protocol).
APIS = [
    KafkaApi(8, 2, 9, offset_commit),
    KafkaApi(9, 1, 9, offset_fetch),
    KafkaApi(10, 0, 6, find_coordinator),
    KafkaApi(11, 0, 9, join_group),
    KafkaApi(12, 0, 4, heartbeat),
    KafkaApi(13, 0, 5, leave_group),
    KafkaApi(14, 0, 5, sync_group),
    KafkaApi(15, 0, 5, describe_groups),
    KafkaApi(16, 0, 5, list_groups),
    KafkaApi(42, 0, 2, delete_groups),
]
