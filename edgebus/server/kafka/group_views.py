"""Kafka's ListGroups, DescribeGroups and DeleteGroups over edgebus's groups.

A group is listed while the coordinator has members for it or the store holds committed offsets
for it (state "Empty" then), native and Kafka groups alike: they are one set. DescribeGroups gives
each member's subscription and assignment in Kafka's consumer-protocol bytes (tools such as
kafka-consumer-groups and the admin clients decode them). DeleteGroups deletes an empty group's
committed offsets (tombstones in `__consumer_offsets`, answered after their fsync).
"""

from __future__ import annotations

from typing import Any

from edgebus.acl.rules import Kind, Op
from edgebus.server.groups.coordinator import State, check_group_id
from edgebus.server.kafka import errcodes as E
from edgebus.server.kafka.authz import DENIED_CODE, refused, visible
from edgebus.server.kafka.authz_ops import NOT_ASKED, authorized_operations
from edgebus.server.kafka.consumer_protocol import encode_assignment, encode_subscription
from edgebus.server.kafka.group_common import PROTOCOL_TYPE, delete_after_fsync, groups_of
from edgebus.server.kafka.shape import response

# Kafka's state for a group it does not know (DescribeGroups before v6 answers it without error).
DEAD = "Dead"
GROUP_TYPE = "classic"


def _states(gh: Any) -> dict[str, Any]:
    """group id -> coordinator Group or None (offsets only)."""
    coord = gh.coordinator
    return {gid: coord.groups.get(gid)
            for gid in sorted(coord.groups.keys() | gh.store.table.keys())}


def list_groups(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    gh = groups_of(ctx)
    # Both filters ignore case, as Kafka's coordinator does: librdkafka sends the type as
    # "Classic" (confluent's ConsumerGroupType.CLASSIC). Every group here is a classic one;
    # "consumer" is KIP-848's protocol, which edgebus does not speak (none listed for it).
    states = {s.strip().lower() for s in getattr(req, "states_filter", ()) or ()}
    types = {t.strip().lower() for t in getattr(req, "types_filter", ()) or ()}
    out = []
    for gid, g in _states(gh).items():
        state = g.state.value if g is not None else State.EMPTY.value
        if states and state.lower() not in states:
            continue
        if types and GROUP_TYPE not in types:
            continue
        if not visible(ctx, conn, Kind.GROUP, gid):  # only what it may describe is listed
            continue
        out.append(dict(group_id=gid, protocol_type=PROTOCOL_TYPE, group_state=state,
                        group_type=GROUP_TYPE))
    return response(header, error_code=E.NONE, groups=out)


def _describe(gh: Any, gid: str, version: int) -> dict[str, Any]:
    try:
        check_group_id(gid)
    except Exception:
        return dict(error_code=E.INVALID_GROUP_ID, group_id=gid, group_state=DEAD,
                    protocol_type="", protocol_data="", members=[])
    g = gh.coordinator.groups.get(gid)
    if g is None:
        known = bool(gh.store.group_offsets(gid))
        if not known and version >= 6:
            return dict(error_code=E.GROUP_ID_NOT_FOUND, group_id=gid, group_state=DEAD,
                        protocol_type="", protocol_data="", members=[],
                        error_message=f"group {gid!r} has no members and no committed offsets")
        return dict(error_code=E.NONE, group_id=gid,
                    group_state=State.EMPTY.value if known else DEAD,
                    protocol_type=PROTOCOL_TYPE if known else "", protocol_data="", members=[])
    stable = g.state is State.STABLE
    coord = gh.coordinator
    members = [
        dict(member_id=mid, group_instance_id=m.offer.instance_id if m.offer else None,
             client_id=m.client_id,
             client_host=m.offer.client_host if m.offer is not None else "",
             member_metadata=encode_subscription(m.topics),
             member_assignment=encode_assignment(g.assignment.get(mid, []) if stable else []))
        # A leader-assigned group's members: the bytes their clients sent, as Kafka shows them.
        | (dict(zip(("member_metadata", "member_assignment"), blob, strict=True))
           if (blob := coord.describe_blob(gid, mid)) is not None else {})
        for mid, m in sorted(g.members.items())
    ]
    return dict(error_code=E.NONE, group_id=gid, group_state=g.state.value,
                protocol_type=PROTOCOL_TYPE, protocol_data=g.assignor if stable else "",
                members=members)


def describe_groups(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    gh = groups_of(ctx)
    v = header.request_api_version
    out = []
    for gid in req.groups:
        why = refused(ctx, conn, Kind.GROUP, Op.DESCRIBE, gid)
        row = _describe(gh, gid, v) if why is None else dict(
            error_code=DENIED_CODE[Kind.GROUP], group_id=gid, group_state=DEAD,
            protocol_type="", protocol_data="", members=[], error_message=why)
        row["authorized_operations"] = (  # v3+, when asked (authz_ops.py)
            authorized_operations(ctx, conn, Kind.GROUP, gid)
            if why is None and getattr(req, "include_authorized_operations", False)
            else NOT_ASKED)
        out.append(row)
    return response(header, groups=out)


def delete_groups(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    gh = groups_of(ctx)
    results = []
    keys: list[tuple[str, tuple[str, int]]] = []
    for gid in req.groups_names:
        try:
            check_group_id(gid)
        except Exception:
            results.append(dict(group_id=gid, error_code=E.INVALID_GROUP_ID))
            continue
        if refused(ctx, conn, Kind.GROUP, Op.DELETE, gid):
            results.append(dict(group_id=gid, error_code=DENIED_CODE[Kind.GROUP]))
            continue
        if not gh.coordinator.is_empty(gid):
            results.append(dict(group_id=gid, error_code=E.NON_EMPTY_GROUP))
            continue
        offsets = gh.store.group_offsets(gid)
        if not offsets:
            results.append(dict(group_id=gid, error_code=E.GROUP_ID_NOT_FOUND))
            continue
        keys.extend((gid, tp) for tp in offsets)
        results.append(dict(group_id=gid, error_code=E.NONE))
    resp = response(header, results=results)
    if not keys:
        return resp

    def failed(e: BaseException) -> Any:
        code = E.code_of(e)
        return response(header, results=[dict(r, error_code=code if r["error_code"] == E.NONE
                                              else r["error_code"]) for r in results])

    return delete_after_fsync(ctx, conn, header, keys, resp, failed)
