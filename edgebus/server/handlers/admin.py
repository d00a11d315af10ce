"""The control plane: API_VERSIONS, METADATA, CREATE_TOPIC, ALTER_TOPIC_CONFIG, DELETE_TOPIC and
STATUS."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgebus.errors import InvalidRequestError, UnknownTopicError
from edgebus.log.manager import LogManager
from edgebus.log.topic_config import TopicConfig, validate_topic_name
from edgebus.protocol import messages as M
from edgebus.protocol import registry as AR
from edgebus.server.handlers.link_read import link_can_read
from edgebus.version import __version__

if TYPE_CHECKING:
    from edgebus.server.acl import Authorizer
    from edgebus.server.group_service import LazyGroups
    from edgebus.server.handlers.data import DataHandlers
    from edgebus.server.txn.coordinator import TxnCoordinator

log = logging.getLogger("edgebus.handlers")


class AdminHandlers:
    acl: Authorizer | None = None  # set by the broker: which topics a replica link may read
    txn: TxnCoordinator | None = None  # set by the broker: told of deleted topics

    def __init__(self, logs: LogManager, data: DataHandlers, groups: LazyGroups,
                 status: Callable[[], dict[str, Any]], topic_defaults: TopicConfig) -> None:
        self.logs = logs
        self.data = data
        self.groups = groups
        self._status = status  # edgebus/server/status.py collect, bound to the server
        self.topic_defaults = topic_defaults

    def api_versions(self, conn: Any, corr: int, req: M.ApiVersionsRequest) -> M.ApiVersionsResponse:
        return M.ApiVersionsResponse(
            __version__,
            [M.ApiVersionRange(k, lo, hi) for k, (lo, hi) in sorted(AR.VERSIONS.items())],
        )

    def metadata(self, conn: Any, corr: int, req: M.MetadataRequest) -> M.MetadataResponse:
        # Internal topics ("__consumer_offsets") are listed only when asked for by name.
        names = req.topics or sorted(n for n in self.logs.topics() if not n.startswith("__"))
        out = []
        topics = self.logs.topics()
        if conn.node is not None:  # a replica link sees its own node's mirrors, and the topics
            mine = f"{conn.node}/"  # a rule lets it read (handlers/link_read.py)
            topics = {n: c for n, c in topics.items()
                      if c.mirror_of.startswith(mine) or link_can_read(self.acl, conn, n)}
            if not req.topics:
                names = sorted(topics)
        for name in names:
            cfg = topics.get(name)
            if cfg is None:
                out.append(M.TopicMetadata(name, 5, f"unknown topic {name!r}", [], []))
                continue
            parts = [
                M.PartitionMetadata(p.partition, p.log_start_offset, p.log_end_offset,
                                    p.size_bytes, p.segment_count)
                for p in self.logs.partitions(name)
            ]
            configs = [M.ConfigEntry(k, str(v)) for k, v in sorted(cfg.to_entries().items())]
            out.append(M.TopicMetadata(name, 0, "", configs, parts))
        return M.MetadataResponse(out)

    def create_topic(self, conn: Any, corr: int, req: M.CreateTopicRequest) -> M.Empty:
        validate_topic_name(req.name)
        entries: dict[str, Any] = {c.name: c.value for c in req.configs}
        if req.partitions > 0:  # 0: the supervisor's topic_defaults.partitions
            entries["partitions"] = req.partitions
        elif req.partitions < 0:
            raise InvalidRequestError(f"partitions must be >= 1, got {req.partitions}")
        mirror_of = entries.get("mirror_of", "")
        if conn.node is not None and not mirror_of.startswith(f"{conn.node}/"):
            raise InvalidRequestError(
                f"a replica link of node {conn.node} creates only mirrors of its own topics "
                f"(mirror_of \"{conn.node}/<topic>\")")
        if conn.node is None and (mirror_of or "incarnation" in entries):
            raise InvalidRequestError("mirror topics are made by their replication link; "
                                      "mirror_of and incarnation cannot be set here")
        cfg = TopicConfig.from_entries(entries, base=self.topic_defaults)
        self.logs.create_topic(req.name, cfg)
        self.groups.topic_created(req.name)  # consumer groups: subscribers rebalance
        log.info("created topic %s with %d partitions (by %r)", req.name, cfg.partitions, conn)
        return M.Empty()

    def alter_topic_config(self, conn: Any, corr: int,
                           req: M.AlterTopicConfigRequest) -> M.AlterTopicConfigResponse:
        validate_topic_name(req.name)  # internal topics ("__...") are not the clients' to change
        current = self.logs.topics().get(req.name)
        if current is None:
            raise UnknownTopicError(f"unknown topic {req.name!r}")
        if not req.configs:
            raise InvalidRequestError("no setting to change")
        entries = {c.name: c.value for c in req.configs}
        if "partitions" in entries:
            raise InvalidRequestError(
                f"the partition count of topic {req.name!r} cannot be changed (it has "
                f"{current.partitions}); create a new topic to have more")
        fixed = sorted({"incarnation", "mirror_of"} & set(entries))
        if fixed:
            raise InvalidRequestError(
                f"{', '.join(fixed)} of topic {req.name!r} cannot be altered (a mirror is made "
                "writable with `edgebus topics promote`)")
        cfg = TopicConfig.from_entries(entries, base=current)
        self.logs.alter_topic_config(req.name, cfg)
        changes = describe_changes(current, cfg)
        log.info("altered topic %s: %s (by %r)", req.name, changes or "no change", conn)
        return M.AlterTopicConfigResponse(
            [M.ConfigEntry(k, v) for k, v in sorted(cfg.to_entries().items())])

    def delete_topic(self, conn: Any, corr: int, req: M.DeleteTopicRequest) -> M.Empty:
        validate_topic_name(req.name)  # internal topics ("__...") cannot be deleted by clients
        # Parked fetches on the topic are answered first so no one holds its partitions.
        for w in self.data.waiters.all():
            if any(t == req.name for t, _ in w.keys):
                self.data.complete_fetch(w)
        self.logs.delete_topic(req.name)
        self.groups.topic_deleted(req.name)  # consumer groups: forget its committed offsets
        if self.txn is not None:  # idempotent producers' sequences, transactions' partitions
            self.txn.topic_deleted(req.name)
        log.info("deleted topic %s (by %r)", req.name, conn)
        return M.Empty()

    def status(self, conn: Any, corr: int, req: M.Empty) -> M.StatusResponse:
        # disk, clients, groups and lag, counters: edgebus/server/status.py
        return M.StatusResponse(json.dumps(self._status()).encode())


def describe_changes(old: TopicConfig, new: TopicConfig) -> str:
    """"retention_ms 604800000 -> 86400000, ..." for a log line; "" when nothing changed."""
    a, b = old.to_entries(), new.to_entries()
    return ", ".join(f"{k} {a[k]} -> {b[k]}" for k in sorted(a) if a[k] != b[k])
