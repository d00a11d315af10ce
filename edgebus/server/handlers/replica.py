"""The destination side of replication: REPLICA_HELLO, REPLICA_APPEND and PROMOTE_TOPIC.

A replica link is a connection on the replica listener (listeners/tcp.py). It may do nothing but
REPLICA_HELLO until its node name and token are accepted; then only what a link needs
(LINK_APIS): read metadata and offsets, create mirror topics of its own node, append replica
batches. docs/REPLICATION.md says what is promised; the cursor rule lives in
Partition.append_replica.
"""

from __future__ import annotations

import logging
from _operator import _compare_digest as compare_digest  # hmac's own; not hmac: OpenSSL
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edgebus import batch as B
from edgebus import format as F
from edgebus.errors import (
    AuthenticationError,
    CorruptRecordError,
    EdgebusError,
    IncarnationMismatchError,
    InvalidRequestError,
    NotAMirrorError,
    NotAuthenticatedError,
)
from edgebus.log.manager import LogManager
from edgebus.protocol import messages as M
from edgebus.server.dispatch import DEFERRED, NO_RESPONSE

if TYPE_CHECKING:
    from edgebus.server.disk import DiskGuard
    from edgebus.server.durable import DurableAcks
    from edgebus.server.handlers.data import DataHandlers
    from edgebus.server.service import LoopApi
    from edgebus.server.stats import Stats

log = logging.getLogger("edgebus.replica")

# Before REPLICA_HELLO succeeds.
HANDSHAKE_APIS = frozenset({int(M.Api.API_VERSIONS), int(M.Api.REPLICA_HELLO)})
# After it: what a link needs, and nothing that could change or read ordinary topics' data.
LINK_APIS = frozenset(int(a) for a in (
    M.Api.API_VERSIONS, M.Api.METADATA, M.Api.LIST_OFFSETS, M.Api.CREATE_TOPIC,
    M.Api.REPLICA_APPEND, M.Api.OFFSET_COMMIT,
))


class ReplicaHandlers:
    def __init__(self, api: LoopApi, logs: LogManager, data: DataHandlers, disk: DiskGuard,
                 durable: DurableAcks, stats: Stats, node: str, tokens: Mapping[str, str]) -> None:
        self.api = api
        self.logs = logs
        self.data = data
        self.disk = disk
        self.durable = durable
        self.stats = stats
        self.node = node
        self.tokens = dict(tokens)  # peer node name -> its token (replica.tokens_file)
        self.refused = 0  # handshakes refused (status, metrics)
        self.duplicates = 0  # replica batches that were already here (a resend)
        self.links: list[Any] = []  # connections that passed REPLICA_HELLO (closed ones dropped)

    def hello(self, conn: Any, corr: int, req: M.ReplicaHelloRequest) -> Any:
        if conn.peer_name is not None:
            # Mutual TLS: the verified certificate names the node; no token is needed.
            ok = conn.peer_name == req.node
            why = f"the certificate is node {conn.peer_name!r}'s, not {req.node!r}'s"
        else:
            want = self.tokens.get(req.node)
            # compare_digest even for an unknown node, so timing does not tell which names exist.
            ok = (compare_digest((want or "\0").encode(), req.token.encode())
                  and want is not None)
            why = f"node {req.node!r} is unknown or its token is wrong"
        if not ok or conn.node is not None:
            self.refused += 1
            if conn.node is not None:
                why = "a second REPLICA_HELLO"
            log.warning("refused a replica link from %r: %s", conn, why)
            self.api.answer(conn, corr, AuthenticationError(f"replica link refused: {why}"))
            self.api.close(conn)
            return NO_RESPONSE
        conn.node = req.node
        conn.allowed = LINK_APIS
        conn.max_input = conn.loop.max_input_buffer  # the ordinary bounds, now that we know it
        conn.proto.frames.limit(F.MAX_FRAME_BYTES)
        self.links = [c for c in self.links if not c.closed] + [conn]
        log.info("replica link from node %s accepted (%r)", req.node, conn)
        return M.ReplicaHelloResponse(self.node)

    def append(self, conn: Any, corr: int, req: M.ReplicaAppendRequest) -> Any:
        if conn.node is None:  # a local client must not write mirrors (they refuse produce too)
            raise NotAuthenticatedError("replica appends come only over a replica link")
        if req.acks not in (M.ACKS_WRITTEN, M.ACKS_DURABLE):
            raise InvalidRequestError(f"a replica append needs acks 1 or 2, got {req.acks}")
        if not req.batches:
            raise InvalidRequestError("REPLICA_APPEND carries no batch")
        p = self.logs.partition(req.topic, req.partition)
        cfg = p.config
        if not cfg.is_mirror:
            raise NotAMirrorError(f"topic {req.topic!r} is not a mirror; a link writes only mirrors")
        if not cfg.mirror_of.startswith(conn.node + "/"):
            raise NotAMirrorError(
                f"topic {req.topic!r} mirrors {cfg.mirror_of}, not a topic of node {conn.node}")
        if req.incarnation != cfg.incarnation:
            raise IncarnationMismatchError(
                f"topic {req.topic!r} mirrors incarnation {cfg.incarnation} of {cfg.mirror_of}; "
                f"the source now sends incarnation {req.incarnation} (deleted and created again)")
        data = memoryview(req.batches)
        appended = present = pos = 0
        try:
            while pos < len(data):
                if len(data) - pos < F.BATCH_HEADER_SIZE:
                    raise CorruptRecordError(f"{len(data) - pos} bytes after the last whole batch")
                length = F.BATCH_PREFIX.unpack_from(data, pos)[2]
                batch = data[pos : pos + length]
                # The source accepted it under its own limits: the format's bound applies here.
                info = B.validate_batch(batch, max_bytes=F.MAX_BATCH_BYTES)
                self.disk.admit(p, info.length)
                if p.append_replica(batch, info):
                    appended += 1
                    self.stats.records_in += info.record_count
                    self.stats.bytes_in += info.length
                else:
                    present += 1
                pos += length
        finally:  # what was appended before an error stays, and its readers are woken
            if appended:
                self.data.on_append(p)
            self.duplicates += present
        resp = M.ReplicaAppendResponse(req.topic, req.partition, appended, present,
                                       p.log_end_offset)
        if req.acks == M.ACKS_DURABLE:
            self.durable.add(conn, corr, p, resp)
            return DEFERRED
        return resp

    def fetch(self, conn: Any, corr: int, req: M.ReplicaFetchRequest) -> Any:
        """Durable batches only (a mirror must never hold what a power cut could take back from
        its source), with each topic's incarnation read in the same turn as its data (a topic
        deleted and created again is never shipped under the old one's name). With `sync`, a
        partition with data past its synced point is fsynced first (group commit), then read."""
        if conn.node is not None:
            raise NotAuthenticatedError("REPLICA_FETCH is for the local replicator")
        if req.max_bytes <= 0:
            raise InvalidRequestError(f"max_bytes must be positive, got {req.max_bytes}")
        if req.sync:
            behind = []
            for fp in req.partitions:
                try:
                    p = self.logs.partition(fp.topic, fp.partition)
                except EdgebusError:
                    continue
                if p.synced_offset < p.log_end_offset and fp.offset < p.log_end_offset:
                    behind.append(p)
            if behind:
                self.durable.add_after_sync(conn, corr, behind, lambda: self._read(req))
                return DEFERRED
        return self._read(req)

    def _read(self, req: M.ReplicaFetchRequest) -> M.ReplicaFetchResponse:
        """Every partition gets at least its first whole durable batch while the response is
        under max_bytes (a large batch is never starved by smaller ones elsewhere); the
        partitions after that point get none this time (the replicator rotates their order)."""
        remaining = min(req.max_bytes, F.MAX_FETCH_RESPONSE_BYTES)
        out = []
        topics = self.logs.topics()
        for fp in req.partitions:
            cfg = topics.get(fp.topic)
            inc = cfg.incarnation if cfg is not None else ""
            try:
                p = self.logs.partition(fp.topic, fp.partition)
                durable = p.synced_offset
                data = b""
                if remaining > 0 and fp.offset < durable:
                    data = p.read(fp.offset, min(fp.max_bytes, remaining), True)
                    n = B.whole_batches(data, durable)[0]  # only batches below the synced point
                    data = data if n == len(data) else data[:n]
                remaining -= len(data)
                out.append(M.ReplicaFetchedPartition(
                    fp.topic, fp.partition, 0, "", inc, p.log_start_offset, durable,
                    p.log_end_offset, data))
            except EdgebusError as e:
                ls = de = le = -1
                try:
                    p = self.logs.partition(fp.topic, fp.partition)
                    ls, de, le = p.log_start_offset, p.synced_offset, p.log_end_offset
                except EdgebusError:
                    pass
                out.append(M.ReplicaFetchedPartition(fp.topic, fp.partition, e.code, str(e), inc,
                                                     ls, de, le, b""))
        return M.ReplicaFetchResponse(out)

    def promote(self, conn: Any, corr: int, req: M.PromoteTopicRequest) -> M.Empty:
        cfg = self.logs.topics().get(req.name)
        source_node = cfg.mirror_of.split("/", 1)[0] if cfg is not None and cfg.is_mirror else None
        live = [c for c in self.links if not c.closed and c.node == source_node]
        if live:
            raise InvalidRequestError(
                f"topic {req.name!r} still has a live replica link from node {source_node}: "
                "stop that replicator (or cut the link) before promoting its mirror")
        self.logs.promote(req.name)
        log.warning("promoted mirror topic %s to a writable topic (by %r)", req.name, conn)
        return M.Empty()

