"""Kafka's OffsetDelete (kafka-python's delete_group_offsets, kafka-consumer-groups
--delete-offsets): some partitions' committed offsets of a group, deleted as Kafka deletes them.

The group must exist (members or committed offsets; else GROUP_ID_NOT_FOUND). A partition of a
topic the group's members are subscribed to keeps its offset (GROUP_SUBSCRIBED_TO_TOPIC): a
running consumer would commit it again. The others get tombstones in `__consumer_offsets`
(native and Kafka groups are one set), answered after their fsync, as DeleteGroups is. Rules:
delete on the group (GROUP_AUTHORIZATION_FAILED for the whole request), read on each topic
(TOPIC_AUTHORIZATION_FAILED for its partitions), as in Kafka.
"""

from __future__ import annotations

from typing import Any

from edgebus.acl.rules import Kind, Op
from edgebus.errors import EdgebusError
from edgebus.server.groups.coordinator import check_group_id
from edgebus.server.kafka import errcodes as E
from edgebus.server.kafka.apis import KafkaApi
from edgebus.server.kafka.authz import DENIED_CODE, refused
from edgebus.server.kafka.group_common import delete_after_fsync, groups_of
from edgebus.server.kafka.shape import response

OFFSET_DELETE = 47
GROUP_SUBSCRIBED_TO_TOPIC = 86


def offset_delete(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    gid = req.group_id
    try:
        check_group_id(gid)
    except EdgebusError:
        return response(header, error_code=E.INVALID_GROUP_ID, topics=[])
    if refused(ctx, conn, Kind.GROUP, Op.DELETE, gid):
        return response(header, error_code=DENIED_CODE[Kind.GROUP], topics=[])
    gh = groups_of(ctx)
    group = gh.coordinator.groups.get(gid)
    members = list(group.members.values()) if group is not None else []
    offsets = gh.store.group_offsets(gid)
    if not members and not offsets:
        return response(header, error_code=E.GROUP_ID_NOT_FOUND, topics=[])
    subscribed = {t for m in members for t in m.topics}
    topics = []
    keys: list[tuple[str, tuple[str, int]]] = []
    for t in req.topics:
        denied = refused(ctx, conn, Kind.TOPIC, Op.READ, t.name) is not None
        rows = []
        for p in t.partitions:
            tp = (t.name, p.partition_index)
            code = (DENIED_CODE[Kind.TOPIC] if denied
                    else GROUP_SUBSCRIBED_TO_TOPIC if t.name in subscribed else E.NONE)
            if code == E.NONE and tp in offsets:
                keys.append((gid, tp))
            rows.append(dict(partition_index=p.partition_index, error_code=code))
        topics.append(dict(name=t.name, partitions=rows))
    resp = response(header, error_code=E.NONE, topics=topics)
    if not keys:
        return resp

    def failed(e: BaseException) -> Any:
        return response(header, error_code=E.code_of(e), topics=[])

    return delete_after_fsync(ctx, conn, header, keys, resp, failed)


APIS: list[KafkaApi] = [KafkaApi(OFFSET_DELETE, 0, 0, offset_delete)]
