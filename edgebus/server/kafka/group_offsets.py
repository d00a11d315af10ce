"""Kafka's OffsetCommit and OffsetFetch on edgebus's committed-offset store.

The store is the one native groups use (edgebus/server/groups/offsets.py, the internal topic
`__consumer_offsets`), so an offset a Kafka consumer commits is the one a native consumer of the
same group resumes from, and the reverse. The rules are the native OFFSET_COMMIT's: only the
group's current members (or anyone, while it has none) may commit, an offset is the next one to
read, and the answer waits for the fsync that makes the commit durable (group commit).

A negative offset is stored as sent and given back by OffsetFetch, as Kafka does (it checks
only the metadata's size): kafkajs's `admin.resetOffsets` commits -2 (earliest) or -1 (latest)
for its consumers to resolve at their next start, and a refusal made that call crash its
consumer. Native consumers take a negative committed offset as none (auto_offset_reset).
"""

from __future__ import annotations

from typing import Any

from edgebus.acl.rules import Kind, Op
from edgebus.errors import EdgebusError, InvalidTopicError
from edgebus.protocol import groups as G
from edgebus.server.groups.coordinator import check_group_id
from edgebus.server.handlers.data import now_ms
from edgebus.server.kafka import errcodes as E
from edgebus.server.kafka.authz import DENIED_CODE, refused
from edgebus.server.kafka.group_common import after_fsync, groups_of
from edgebus.server.kafka.shape import response


def _internal(topic: str) -> bool:
    return topic.startswith("__")


def offset_commit(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    gh = groups_of(ctx)
    generation = req.generation_id_or_member_epoch

    def all_failed(code: int) -> Any:
        return response(header, topics=[
            dict(name=t.name, partitions=[dict(partition_index=p.partition_index, error_code=code)
                                          for p in t.partitions]) for t in req.topics])

    if gh.api.stopping:
        return all_failed(E.COORDINATOR_NOT_AVAILABLE)
    try:
        check_group_id(req.group_id)
    except EdgebusError:
        return all_failed(E.INVALID_GROUP_ID)
    # Read on the group, then on each topic (docs/SECURITY.md): a refused topic's partitions
    # answer TOPIC_AUTHORIZATION_FAILED and the others are committed.
    if refused(ctx, conn, Kind.GROUP, Op.READ, req.group_id):
        return all_failed(DENIED_CODE[Kind.GROUP])
    try:
        gh.coordinator.check_commit(req.group_id, generation, req.member_id)
        if req.group_id not in gh.store.table:
            gh._check_capacity(req.group_id)
    except EdgebusError as e:
        return all_failed(E.code_of(e))
    out = []
    entries = []
    for t in req.topics:
        parts = []
        if refused(ctx, conn, Kind.TOPIC, Op.READ, t.name):
            out.append(dict(name=t.name, partitions=[
                dict(partition_index=p.partition_index, error_code=DENIED_CODE[Kind.TOPIC])
                for p in t.partitions]))
            continue
        for p in t.partitions:
            metadata = p.committed_metadata or ""
            try:
                if _internal(t.name):
                    raise InvalidTopicError(f"{t.name!r} is an internal topic")
                if len(metadata.encode()) > G.MAX_COMMIT_METADATA:
                    parts.append(dict(partition_index=p.partition_index,
                                      error_code=E.OFFSET_METADATA_TOO_LARGE))
                    continue
                gh.logs.partition(t.name, p.partition_index)
            except EdgebusError as e:
                parts.append(dict(partition_index=p.partition_index,
                                  error_code=E.code_of(e, E.INVALID_COMMIT_OFFSET_SIZE)))
                continue
            parts.append(dict(partition_index=p.partition_index, error_code=E.NONE))
            # v6+: the leader epoch of the last record the client read, given back by OffsetFetch
            # (a restarted kafka-python validates its committed position with it: KIP-320).
            entries.append((t.name, p.partition_index, p.committed_offset, metadata,
                            getattr(p, "committed_leader_epoch", -1)))
        out.append(dict(name=t.name, partitions=parts))
    resp = response(header, topics=out)
    if not entries:
        return resp
    try:
        p = gh.store.commit(req.group_id, entries, generation, now_ms())
    except EdgebusError as e:
        return all_failed(E.code_of(e))
    gh.data.on_append(p)
    return after_fsync(ctx, conn, header, p, resp, lambda e: all_failed(E.code_of(e)))


def _fetch_group(ctx: Any, conn: Any, group_id: str, topics: Any,
                 stable: bool = False) -> tuple[int, list[dict[str, Any]]]:
    """(group error code, topics) for one group; `topics` None = every committed partition.
    `stable` (require_stable, v7+: read_committed consumers): a partition whose offset an
    open transaction will commit answers UNSTABLE_OFFSET_COMMIT, as in Kafka (KIP-447), so that
    a consumer taking it over waits for that transaction rather than reading the offset
    before it and processing its records a second time."""
    gh = groups_of(ctx)
    try:
        check_group_id(group_id)
    except EdgebusError:
        return E.INVALID_GROUP_ID, []
    if refused(ctx, conn, Kind.GROUP, Op.DESCRIBE, group_id):  # describe on the group
        return DENIED_CODE[Kind.GROUP], []
    if topics is None:
        tps: dict[str, list[int]] = {}
        for topic, part in sorted(gh.store.group_offsets(group_id)):
            tps.setdefault(topic, []).append(part)
        wanted = list(tps.items())
    else:
        wanted = [(t.name, list(t.partition_indexes)) for t in topics]
    txn = ctx.parts.get("txn") if stable else None
    pending = txn.pending_offsets(group_id) if txn is not None else set()
    out = []
    for topic, parts in wanted:
        rows = []
        for part in parts:
            if (topic, part) in pending:
                rows.append(dict(partition_index=part, committed_offset=G.NO_OFFSET,
                                 committed_leader_epoch=-1, metadata="",
                                 error_code=E.UNSTABLE_OFFSET_COMMIT))
                continue
            c = gh.store.get(group_id, (topic, part))
            rows.append(dict(partition_index=part,
                             committed_offset=c.offset if c is not None else G.NO_OFFSET,
                             committed_leader_epoch=c.leader_epoch if c is not None else -1,
                             metadata=c.metadata if c is not None else "",
                             error_code=E.NONE))
        out.append(dict(name=topic, partitions=rows))
    return E.NONE, out


def offset_fetch(ctx: Any, conn: Any, header: Any, req: Any) -> Any:
    if header.request_api_version >= 8:
        groups = []
        for g in req.groups:
            code, topics = _fetch_group(ctx, conn, g.group_id, g.topics, req.require_stable)
            groups.append(dict(group_id=g.group_id, topics=topics, error_code=code))
        return response(header, groups=groups)
    code, topics = _fetch_group(ctx, conn, req.group_id, req.topics,
                                getattr(req, "require_stable", False))
    return response(header, topics=topics, error_code=code)
