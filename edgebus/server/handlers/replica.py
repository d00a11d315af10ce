"""The destination side of replication: REPLICA_HELLO, REPLICA_APPEND (plain and compressed),
REPLICA_GAP and PROMOTE_TOPIC.

A replica link is a connection on the replica listener (listeners/tcp.py). It may do nothing but
REPLICA_HELLO until its node name and token are accepted; then only what a link needs
(LINK_APIS): read metadata and offsets, create mirror topics of its own node, append replica
batches, and read (REPLICA_FETCH) the topics an access rule names for it (link_read.py).
docs/REPLICATION.md says what is promised; the cursor rule lives in Partition.append_replica.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import time
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
from edgebus.log.gaps import GAP_REASONS
from edgebus.log.manager import LogManager
from edgebus.protocol import messages as M
from edgebus.server.dispatch import DEFERRED, NO_RESPONSE
from edgebus.server.fetchwait import ParkedFetch
from edgebus.server.handlers.data import MAX_PARKED_FETCHES_PER_CONNECTION
from edgebus.server.handlers.link_read import link_may_read

if TYPE_CHECKING:
    from edgebus.server.acl import Authorizer
    from edgebus.server.disk import DiskGuard
    from edgebus.server.durable import DurableAcks
    from edgebus.server.handlers.data import DataHandlers
    from edgebus.server.service import LoopApi
    from edgebus.server.stats import Stats

log = logging.getLogger("edgebus.replica")

# A REPLICA_FETCH Unix-socket connection's send buffer (the kernel doubles it, up to
# net.core.wmem_max): a replicator's read of a few MiB goes out in one or two writes instead of
# twenty round trips of the default ~200 KiB, each a wake-up of both processes.
FETCH_SNDBUF = 4 * 1024 * 1024

# Before REPLICA_HELLO succeeds: dispatch.HANDSHAKE_APIS.
# After it: what a link needs, and nothing that could change or read ordinary topics' data.
LINK_APIS = frozenset(int(a) for a in (
    M.Api.API_VERSIONS, M.Api.METADATA, M.Api.LIST_OFFSETS, M.Api.CREATE_TOPIC,
    M.Api.REPLICA_APPEND, M.Api.OFFSET_COMMIT, M.Api.REPLICA_FETCH, M.Api.REPLICA_GAP,
    M.Api.REPLICA_APPEND_COMPRESSED,
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
        self.gaps = 0  # gap records written (offsets a source never shipped)
        self.links: list[Any] = []  # connections that passed REPLICA_HELLO (closed ones dropped)
        self.acl: Authorizer | None = None  # set by the broker: links' reads need a rule

    def set_tokens(self, tokens: Mapping[str, str]) -> None:
        """New tokens (a reload): a link that came in with a token its node no longer has (changed
        or removed) is closed, so revoking a peer takes effect now; its replicator reconnects
        and is checked against the new tokens. Links admitted by a certificate stay."""
        old, self.tokens = self.tokens, dict(tokens)
        for conn in [c for c in self.links if not c.closed and c.peer_name is None]:
            if self.tokens.get(conn.node) != old.get(conn.node):
                log.warning("closing the replica link of node %s (%r): its token changed in "
                            "replica.tokens_file", conn.node, conn)
                self.api.close(conn)
        self.links = [c for c in self.links if not c.closed]

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

    def _mirror(self, conn: Any, topic: str, partition: int, incarnation: str, acks: int) -> Any:
        """The mirror partition a link may write, once the request's identity checks pass."""
        if conn.node is None:  # a local client must not write mirrors (they refuse produce too)
            raise NotAuthenticatedError("replica appends come only over a replica link")
        if acks not in (M.ACKS_WRITTEN, M.ACKS_DURABLE):
            raise InvalidRequestError(f"a replica append needs acks 1 or 2, got {acks}")
        p = self.logs.partition(topic, partition)
        cfg = p.config
        if not cfg.is_mirror:
            raise NotAMirrorError(f"topic {topic!r} is not a mirror; a link writes only mirrors")
        if not cfg.mirror_of.startswith(conn.node + "/"):
            raise NotAMirrorError(
                f"topic {topic!r} mirrors {cfg.mirror_of}, not a topic of node {conn.node}")
        if incarnation != cfg.incarnation:
            raise IncarnationMismatchError(
                f"topic {topic!r} mirrors incarnation {cfg.incarnation} of {cfg.mirror_of}; "
                f"the source now sends incarnation {incarnation} (deleted and created again)")
        return p

    def append(self, conn: Any, corr: int, req: M.ReplicaAppendRequest) -> Any:
        p = self._mirror(conn, req.topic, req.partition, req.incarnation, req.acks)
        if not req.batches:
            raise InvalidRequestError("REPLICA_APPEND carries no batch")
        return self._append(conn, corr, p, req.acks, memoryview(req.batches))

    def append_compressed(self, conn: Any, corr: int, req: M.ReplicaAppendCompressedRequest
                          ) -> Any:
        """REPLICA_APPEND with the batches compressed on the wire: decompressed (bounded by the
        frame limit, checked against raw_bytes) to the source's exact bytes, then appended."""
        p = self._mirror(conn, req.topic, req.partition, req.incarnation, req.acks)
        if req.codec != M.CODEC_ZSTD:
            raise InvalidRequestError(f"unknown codec {req.codec} (1 = zstd)")
        if not 0 < req.raw_bytes <= F.MAX_FRAME_BYTES or not req.batches:
            raise InvalidRequestError(
                f"raw_bytes {req.raw_bytes} is not in 1..{F.MAX_FRAME_BYTES}, or no data")
        import zstandard

        try:
            raw = zstandard.ZstdDecompressor().decompress(bytes(req.batches),
                                                          max_output_size=req.raw_bytes)
        except zstandard.ZstdError as e:
            raise CorruptRecordError(f"the compressed batches do not decompress: {e}") from None
        if len(raw) != req.raw_bytes:
            raise CorruptRecordError(f"the batches decompress to {len(raw)} bytes, not the "
                                     f"{req.raw_bytes} announced")
        return self._append(conn, corr, p, req.acks, memoryview(raw))

    def _append(self, conn: Any, corr: int, p: Any, acks: int, data: memoryview) -> Any:
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
        resp = M.ReplicaAppendResponse(p.topic, p.partition, appended, present,
                                       p.log_end_offset)
        if acks == M.ACKS_DURABLE:
            self.durable.add(conn, corr, p, resp)
            return DEFERRED
        return resp

    def gap(self, conn: Any, corr: int, req: M.ReplicaGapRequest) -> Any:
        """Record offsets the source will never ship and move the mirror's log end past them
        (Partition.append_gap): the mirror keeps its source's offsets, and says what is missing."""
        p = self._mirror(conn, req.topic, req.partition, req.incarnation, req.acks)
        if req.reason not in GAP_REASONS:
            raise InvalidRequestError(f"unknown gap reason {req.reason} (1 retention, 2 max_age)")
        recorded = p.append_gap(req.start_offset, req.end_offset, req.reason, int(time.time() * 1000))
        if recorded:
            self.gaps += 1
            self.data.on_append(p)  # parked readers at the old end learn of the new one
        resp = M.ReplicaAppendResponse(p.topic, p.partition, int(recorded), int(not recorded),
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
            for fp in req.partitions:  # a link reads a topic only where a rule says it may
                link_may_read(self.acl, conn, fp.topic)
        if req.max_bytes <= 0:
            raise InvalidRequestError(f"max_bytes must be positive, got {req.max_bytes}")
        if not getattr(conn, "big_sndbuf", True) and conn.shm is None:
            conn.big_sndbuf = True  # once per connection (Connection.big_sndbuf)
            with contextlib.suppress(OSError, AttributeError):
                if conn.sock.family == socket.AF_UNIX:  # TCP sizes its own (autotuning)
                    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                         min(req.max_bytes, FETCH_SNDBUF))
        if req.max_wait_ms > 0 and self._nothing_to_read(conn, req):
            self._park(conn, corr, req)
            return DEFERRED
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

    def _nothing_to_read(self, conn: Any, req: M.ReplicaFetchRequest) -> bool:
        """Whether a long poll may park: every partition exists and is asked for at its log end
        (nothing durable or not to read), and the connection may park another request."""
        if self.api.stopping or conn.parked >= MAX_PARKED_FETCHES_PER_CONNECTION:
            return False
        try:
            return all(self.logs.partition(fp.topic, fp.partition).at_end(fp.offset)
                       for fp in req.partitions)
        except EdgebusError:
            return False

    def _park(self, conn: Any, corr: int, req: M.ReplicaFetchRequest) -> None:
        """Park the long poll with the fetches (handlers/data.py): the first append to any of
        its partitions, or the deadline, answers it as a REPLICA_FETCH without a wait (an
        fsync first when the new data is not synced yet)."""
        wait = min(req.max_wait_ms, self.data.max_fetch_wait_ms)
        now_req = dataclasses.replace(req, max_wait_ms=0)

        def respond() -> None:
            try:
                result = self.fetch(conn, corr, now_req)
            except EdgebusError as e:
                self.api.answer(conn, corr, e)
                return
            if result is not DEFERRED:
                self.api.answer(conn, corr, result)

        self.data.waiters.park(ParkedFetch(
            conn, corr, M.FetchRequest(wait, 1, req.max_bytes, req.partitions),
            time.monotonic() + wait / 1000, respond=respond))

    def _read(self, req: M.ReplicaFetchRequest) -> M.ReplicaFetchResponse | M.ReplicaFetchResponseV1:
        """Every partition gets at least its first whole durable batch while the response is
        under max_bytes (a large batch is never starved by smaller ones elsewhere); the
        partitions after that point get none this time (the replicator rotates their order)."""
        remaining = min(req.max_bytes, F.MAX_FETCH_RESPONSE_BYTES)
        v1 = isinstance(req, M.ReplicaFetchRequestV1)  # answers say the bytes to the log end
        out: list[M.ReplicaFetchedPartition] = []
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
                head = (fp.topic, fp.partition, 0, "", inc, p.log_start_offset, durable,
                        p.log_end_offset, data)
                out.append(M.ReplicaFetchedPartitionV1(*head, p.bytes_to_end(fp.offset)) if v1
                           else M.ReplicaFetchedPartition(*head))
            except EdgebusError as e:
                ls = de = le = -1
                try:
                    p = self.logs.partition(fp.topic, fp.partition)
                    ls, de, le = p.log_start_offset, p.synced_offset, p.log_end_offset
                except EdgebusError:
                    pass
                bad = (fp.topic, fp.partition, e.code, str(e), inc, ls, de, le, b"")
                out.append(M.ReplicaFetchedPartitionV1(*bad) if v1
                           else M.ReplicaFetchedPartition(*bad))
        if v1:
            return M.ReplicaFetchResponseV1(out)  # type: ignore[arg-type]  # all V1 here
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

