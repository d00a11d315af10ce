"""The client side of replication: read a partition's batches as stored, and append them to a
peer's mirror. What the replicator (bridges/replicator) is built on; docs/REPLICATION.md.

`BatchReader` reads whole record batches (the exact bytes of the log: offsets, append times and
CRCs as the source stamped them) from the local supervisor. `ReplicaLink` is one authenticated
connection to a peer supervisor's replica listener (`replica.listen` there): it creates mirror
topics and appends batches at exactly the mirror's log end.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgebus import batch as B
from edgebus import format as F
from edgebus.batch import Record
from edgebus.client import replica_errors as E
from edgebus.client.channel import SyncChannel
from edgebus.client.replica_send import (
    AppendHead,
    CompressedHead,
    PendingAppend,
    SplitRequestChannel,
)
from edgebus.client.shm_channel import open_sync_channel
from edgebus.errors import (
    AuthenticationError,
    BrokerUnavailableError,
    EdgebusError,
    OperationTimeoutError,
    ProtocolError,
    UnknownTopicError,
    UnsupportedVersionError,
    error_for_code,
)
from edgebus.heap import keep_freed_heap
from edgebus.protocol import groups as G
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol, ResponseFrame

# Bytes of batches one read asks for: a few of the largest batches, bounded memory.
READ_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class TopicInfo:
    """What replication needs to know of a topic on either side."""

    name: str
    incarnation: str
    mirror_of: str  # "" for an ordinary topic
    configs: dict[str, str]
    start_offsets: list[int]  # per partition
    end_offsets: list[int]

    @property
    def partitions(self) -> int:
        return len(self.end_offsets)


def _topic_info(t: M.TopicMetadata) -> TopicInfo:
    if t.error_code:
        raise error_for_code(t.error_code, t.error_message)
    cfg = {c.name: c.value for c in t.configs}
    parts = sorted(t.partitions, key=lambda p: p.partition)
    return TopicInfo(t.name, cfg.get("incarnation", ""), cfg.get("mirror_of", ""), cfg,
                     [p.log_start_offset for p in parts], [p.log_end_offset for p in parts])


@dataclass(frozen=True)
class StoredBatch:
    """One record batch exactly as the log holds it."""

    data: bytes
    base_offset: int
    next_offset: int  # base_offset + record count: where the following batch starts

    def records(self, topic: str, partition: int) -> list[Record]:
        """The batch's records, checked (CRC) and decoded."""
        return B.decode_batch(self.data, topic, partition)


@dataclass(frozen=True)
class PartitionRead:
    """One partition's part of BatchReader.read_many: whole batches back to back, as stored
    (forwarded as they are: the destination checks every CRC). `data` is a view of the answer's
    buffer (bytes(data) for a copy of its own)."""

    data: bytes | memoryview
    first_offset: int  # base offset of the first batch (-1 when there is none)
    next_offset: int  # where the batch after the last one starts (-1 when there is none)
    log_start_offset: int
    log_end_offset: int
    error: EdgebusError | None  # OffsetOutOfRangeError, UnknownTopicError, ... (then no data)
    incarnation: str = ""  # read_durable: the topic's at the time of the read
    durable_end: int = -1  # read_durable: every offset below it is fsynced on the source
    # read_durable: bytes of log from the batch at the asked offset to the log end (at most one
    # index interval high; FORMAT.md 7.9); -1 when the source predates REPLICA_FETCH v1.
    bytes_to_end: int = -1

    def batches(self) -> list[StoredBatch]:
        return _batches(self.data)

    def append_times_ms(self) -> tuple[int, int]:
        """(first, last) batch's append time, from their headers only; (-1, -1) when empty."""
        data, pos, first, last = self.data, 0, -1, -1
        while pos < len(data):
            _, last, length = F.BATCH_PREFIX.unpack_from(data, pos)
            first = last if first < 0 else first
            pos += length
        return first, last

    def split_at_time(self, append_time_ms: int) -> tuple[int, int]:
        """(bytes, next offset) of the leading batches appended before `append_time_ms`, from
        their headers only (append times never decrease within a partition, so the older
        batches are a prefix): (0, first_offset) when the first is not older."""
        data, pos, nxt = self.data, 0, self.first_offset
        while pos < len(data):
            base, append_time, length = F.BATCH_PREFIX.unpack_from(data, pos)
            if append_time >= append_time_ms:
                return pos, base
            pos += length
            nxt = self.next_offset
        return pos, nxt
    def records(self, topic: str, partition: int) -> list[Record]:
        """The records of every batch, each checked (CRC) and decoded: for a target that is
        not an edgebus log (Kafka, NATS) and so takes records, not batches."""
        out: list[Record] = []
        for mv in B.iter_batches(self.data):
            out += B.decode_batch(mv, topic, partition)
        return out

    def record_batches(self, topic: str, partition: int
                       ) -> Iterator[tuple[int, int, list[B.Record]]]:
        """(base offset, next offset, records) of each batch, its header and CRC checked once:
        for targets that store records, not batches (NATS, Kafka)."""
        for mv in B.iter_batches(self.data):
            recs = B.decode_batch(mv, topic, partition)
            h = F.BATCH_HEADER.unpack_from(mv, 0)
            yield h[0], h[0] + h[7], recs


def _batches(records: bytes | memoryview | None) -> list[StoredBatch]:
    out = []
    for mv in B.iter_batches(records or b""):
        info = B.validate_batch(mv)  # a batch damaged on the way is never shipped
        out.append(StoredBatch(bytes(mv), info.base_offset, info.base_offset + info.record_count))
    return out


def _whole(records: bytes | memoryview | None) -> tuple[bytes | memoryview, int, int]:
    """(the whole batches, first base offset, next offset), from the headers only: shipping
    costs nothing per record here (the destination checks every CRC). A view of the answer's
    own buffer, not a copy: a read of 4 MiB is forwarded without being copied here."""
    n, first, nxt = B.whole_batches(records)
    mv = memoryview(records or b"")
    return mv if n == len(mv) else mv[:n], first, nxt


class FetchVersion:
    """Which REPLICA_FETCH version a channel's supervisor serves: asked once (API_VERSIONS),
    and again after a refusal (the supervisor was replaced by an older one meanwhile). Version
    1 answers carry the bytes to the log end; an older supervisor is read with version 0."""

    def __init__(self) -> None:
        self.version: int | None = None

    def get(self, ch: SyncChannel) -> int:
        if self.version is None:
            resp = ch.request(M.Api.API_VERSIONS, M.ApiVersionsRequest("edgebus-replicator"))
            top = max((a.max_version for a in resp.apis if a.api_key == M.Api.REPLICA_FETCH),
                      default=0)
            self.version = min(top, 1)
        return self.version


def _read_durable(ch: SyncChannel, positions: Mapping[tuple[str, int], int], max_bytes: int,
                  sync: bool, per_partition: Mapping[tuple[str, int], int] | None = None,
                  max_wait_ms: int = 0, timeout: float | None = None,
                  version: FetchVersion | None = None) -> dict[tuple[str, int], PartitionRead]:
    caps = per_partition or {}
    parts = [M.FetchPartition(t, p, off, caps.get((t, p), max_bytes))
             for (t, p), off in positions.items()]
    if timeout is None:
        timeout = ch.timeout + max_wait_ms / 1000
    v1 = version is not None and version.get(ch) >= 1
    kind = M.ReplicaFetchRequestV1 if v1 else M.ReplicaFetchRequest
    try:
        resp = ch.request(M.Api.REPLICA_FETCH, kind(1 if sync else 0, max_bytes, parts,
                                                    max_wait_ms), timeout=timeout)
    except UnsupportedVersionError:
        if not v1 or version is None:
            raise
        version.version = None  # an older supervisor now: ask again which version it serves
        return _read_durable(ch, positions, max_bytes, sync, per_partition, max_wait_ms,
                             timeout, version)
    out: dict[tuple[str, int], PartitionRead] = {}
    for fp in resp.partitions:
        err = error_for_code(fp.error_code, fp.error_message) if fp.error_code else None
        data, first, nxt = _whole(fp.records) if err is None else (b"", -1, -1)
        out[(fp.topic, fp.partition)] = PartitionRead(
            data, first, nxt, fp.log_start_offset, fp.log_end_offset, err, fp.incarnation,
            fp.durable_end, getattr(fp, "bytes_to_end", -1))
    return out


class BatchReader:
    """Reads whole batches from the local supervisor (any topic, any offset still on disk)."""

    def __init__(self, socket: str | os.PathLike[str] | None = None, timeout: float = 30.0) -> None:
        keep_freed_heap()  # read-sized buffers reuse heap pages (edgebus/heap.py)
        self._ch = open_sync_channel(socket, timeout, "socket")
        self._fetch_version = FetchVersion()

    def topics(self) -> list[str]:
        return [t.name for t in self._ch.request(M.Api.METADATA, M.MetadataRequest([])).topics]

    def describe(self, topic: str) -> TopicInfo:
        return _topic_info(self._ch.request(M.Api.METADATA, M.MetadataRequest([topic])).topics[0])

    def read(self, topic: str, partition: int, offset: int, max_bytes: int = READ_BYTES,
             max_wait_ms: int = 0) -> tuple[list[StoredBatch], int, int]:
        """(batches from the one holding `offset`, log start, log end). With max_wait_ms, waits
        that long for data when `offset` is the log end. Raises OffsetOutOfRangeError when the
        offset is no longer (or not yet) in the log."""
        req = M.FetchRequest(max_wait_ms, 1, max_bytes,
                             [M.FetchPartition(topic, partition, offset, max_bytes)])
        resp = self._ch.request(M.Api.FETCH, req, timeout=self._ch.timeout + max_wait_ms / 1000)
        fp = resp.partitions[0]
        if fp.error_code:
            raise error_for_code(fp.error_code, fp.error_message)
        return _batches(fp.records), fp.log_start_offset, fp.high_watermark

    def read_many(self, positions: Mapping[tuple[str, int], int], max_bytes: int = READ_BYTES,
                  max_wait_ms: int = 0) -> dict[tuple[str, int], PartitionRead]:
        """read() of many partitions in one request; with max_wait_ms, the answer comes as soon
        as any of them has data (or the wait ends)."""
        per = max(F.BATCH_HEADER_SIZE, max_bytes // max(1, len(positions)))
        req = M.FetchRequest(max_wait_ms, 1, max_bytes,
                             [M.FetchPartition(t, p, off, per) for (t, p), off in positions.items()])
        resp = self._ch.request(M.Api.FETCH, req, timeout=self._ch.timeout + max_wait_ms / 1000)
        out: dict[tuple[str, int], PartitionRead] = {}
        for fp in resp.partitions:
            if fp.error_code:
                out[(fp.topic, fp.partition)] = PartitionRead(
                    b"", -1, -1, -1, -1, error_for_code(fp.error_code, fp.error_message))
                continue
            data, first, nxt = _whole(fp.records)
            out[(fp.topic, fp.partition)] = PartitionRead(
                data, first, nxt, fp.log_start_offset, fp.high_watermark, None)
        return out

    def read_durable(self, positions: Mapping[tuple[str, int], int], max_bytes: int = READ_BYTES,
                     sync: bool = True,
                     per_partition: Mapping[tuple[str, int], int] | None = None,
                     max_wait_ms: int = 0) -> dict[tuple[str, int], PartitionRead]:
        """Like read_many, but only batches the source has fsynced (what a replica may hold),
        with each topic's incarnation read in the same turn. sync: data past a partition's
        synced point is fsynced first (group commit), so nothing waits for the periodic flush.
        per_partition: each partition's own cap (default max_bytes); its first whole batch comes
        whatever the cap. max_wait_ms: when no partition has anything past its offset, the
        answer waits that long for an append to any of them (a long poll: idle is idle)."""
        return _read_durable(self._ch, positions, max_bytes, sync, per_partition, max_wait_ms,
                             version=self._fetch_version)

    def close(self) -> None:
        self._ch.close()

    def __enter__(self) -> BatchReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _TcpChannel(SplitRequestChannel):
    """SyncChannel over TCP to a replica listener, with the REPLICA_HELLO handshake on connect."""

    def __init__(self, host: str, port: int, node: str, token: str, timeout: float,
                 tls: ssl.SSLContext | None, server_name: str | None) -> None:
        super().__init__(Path(f"tcp:{host}:{port}"), timeout)
        self.host, self.port = host, port
        self.node, self.token = node, token
        self.tls, self.server_name = tls, server_name or host
        self.peer_node = ""
        self._direct = tls is None  # OpenSSL's buffer is invisible to select()

    @property
    def where(self) -> str:
        """The peer as errors name it."""
        node = f" (node {self.peer_node})" if self.peer_node else ""
        return f"the replica listener at {self.host}:{self.port}{node}"

    def request(self, api: int, body: Any, timeout: float | None = None) -> Any:
        try:
            return super().request(api, body, timeout)
        except (EdgebusError, OSError) as e:
            raise E.link_lost(self.where, e) from None

    def begin(self, api: int, head: Any, data: bytes | memoryview) -> int:
        try:
            return super().begin(api, head, data)
        except (EdgebusError, OSError) as e:
            raise E.link_lost(self.where, e) from None

    def finish(self, api: int, corr: int) -> Any:
        try:
            return super().finish(api, corr)
        except (EdgebusError, OSError) as e:
            raise E.link_lost(self.where, e) from None

    def _connect(self) -> None:
        # Every error names the address and the step, and says what to check there
        # (replica_errors.py): never the local supervisor's socket.
        address = f"{self.host}:{self.port}"
        try:
            s = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as e:
            raise E.connect_failed(address, e, self.timeout) from None
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            try:
                s = self.tls.wrap_socket(s, server_hostname=self.server_name)
            except (OSError, ssl.SSLError) as e:
                s.close()
                raise AuthenticationError(
                    f"TLS with the replica listener at {address} failed: {e}: check the link's "
                    "`tls.ca` against the peer's certificate, its name against the address "
                    "(or `tls.server_name`), and that the peer's listener has TLS "
                    "(`replica.tls_cert`)") from None
        s.settimeout(None)
        self._sock = s
        self._proto = type(self._proto)()
        hello = M.ReplicaHelloRequest(self.node, self.token)
        try:
            try:
                frame = self._roundtrip(M.Api.REPLICA_HELLO, hello,
                                        time.monotonic() + self.timeout, self.timeout)
            except ssl.SSLError as e:  # TLS 1.3: the server's verdict on our certificate
                raise AuthenticationError(
                    f"the replica listener at {address} refused this node's TLS "
                    f"certificate: {e.reason or e}") from None
            except (OSError, BrokerUnavailableError, OperationTimeoutError, ProtocolError) as e:
                raise E.hello_failed(address, e, self.timeout) from None
            try:
                resp = ClientProtocol.decode_body(M.Api.REPLICA_HELLO, frame)
            except AuthenticationError as e:
                raise AuthenticationError(f"the replica listener at {address} refused node "
                                          f"{self.node!r}: {e.args[0] if e.args else e}") from None
        except BaseException:
            self.close()
            raise
        self.peer_node = resp.node

    def _frames(self, deadline: float) -> list[ResponseFrame]:
        # Decrypted bytes that OpenSSL already holds are invisible to select(): take them first.
        sock = self._sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            self._proto.receive_data(sock.recv(sock.pending()))
        return super()._frames(deadline)


def client_context(ca: str | None = None, cert: str | None = None, key: str | None = None
                   ) -> ssl.SSLContext:
    """TLS for a replica link: the peer verified against `ca` (default: the system's CAs), and
    this node's certificate for mutual TLS when `cert` and `key` are given."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


class ReplicaLink:
    """One authenticated link to a peer's replica listener, as node `node` with its token."""

    def __init__(self, address: str, node: str, token: str = "", timeout: float = 30.0,
                 tls: ssl.SSLContext | None = None, server_name: str | None = None) -> None:
        """tls: edgebus.client.replica.client_context(...) for a listener with TLS; the peer's
        certificate must name `server_name` (default: the address's host)."""
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port, got {address!r}")
        self.address = address
        self._ch = _TcpChannel(host.strip("[]"), int(port), node, token, timeout, tls, server_name)
        self._fetch_version = FetchVersion()
        self._ch._ensure()  # connect and authenticate now: a wrong token fails here

    @property
    def peer_node(self) -> str:
        return self._ch.peer_node

    def describe(self, topic: str) -> TopicInfo | None:
        """The mirror's state on the peer, or None when it has no such topic."""
        t = self._ch.request(M.Api.METADATA, M.MetadataRequest([topic])).topics[0]
        if t.error_code == UnknownTopicError.code:
            return None
        return _topic_info(t)

    def create_mirror(self, topic: str, source: TopicInfo, mirror_of: str) -> None:
        """Create `topic` on the peer as a mirror of `source` (same partitions, limits and
        incarnation)."""
        keep = ("retention_ms", "retention_bytes", "segment_bytes", "segment_ms",
                "max_message_bytes", "index_interval_bytes", "on_disk_full",
                "cleanup_policy", "delete_retention_ms", "min_compaction_lag_ms")
        configs = [M.ConfigEntry(k, source.configs[k]) for k in keep if k in source.configs]
        configs += [M.ConfigEntry("mirror_of", mirror_of),
                    M.ConfigEntry("incarnation", source.incarnation)]
        self._ch.request(M.Api.CREATE_TOPIC, M.CreateTopicRequest(topic, source.partitions, configs))

    def append(self, topic: str, partition: int, incarnation: str, batches: bytes | memoryview,
               durable: bool = False) -> tuple[int, int, int]:
        """Append consecutive whole batches (a PartitionRead's data) to the mirror: (batches
        appended, batches it already held, the mirror's log end). durable: the answer waits
        for the peer's fsync (group commit there)."""
        return self.append_begin(topic, partition, incarnation, batches, durable).result()

    def append_begin(self, topic: str, partition: int, incarnation: str,
                     batches: bytes | memoryview, durable: bool = False) -> PendingAppend:
        """append() in two steps: the request is sent now, straight from `batches` (no copy),
        and result() waits for the answer. Nothing else may be sent on this link in between
        (answers come in order): the replicator reads the next batches from its source
        meanwhile."""
        acks = M.ACKS_DURABLE if durable else M.ACKS_WRITTEN
        corr = self._ch.begin(M.Api.REPLICA_APPEND,
                              AppendHead(topic, partition, incarnation, acks), batches)
        return PendingAppend(self._ch, M.Api.REPLICA_APPEND, corr, len(batches))

    def read_durable(self, positions: Mapping[tuple[str, int], int],
                     max_bytes: int = READ_BYTES, max_wait_ms: int = 0,
                     timeout: float | None = None) -> dict[tuple[str, int], PartitionRead]:
        """BatchReader.read_durable of the peer's topics (a topic brought down from it): only
        what the peer's access rules let this node read (`allow node:NAME read topic:T`).
        max_wait_ms: the same long poll. timeout: how long the whole request may take before
        the link counts as lost (default: the link's timeout plus the wait)."""
        return _read_durable(self._ch, positions, max_bytes, True, max_wait_ms=max_wait_ms,
                             timeout=timeout, version=self._fetch_version)

    def append_compressed(self, topic: str, partition: int, incarnation: str,
                          batches: bytes | memoryview,
                          durable: bool = False, level: int = 3) -> tuple[int, int, int, int]:
        """append() with the batches zstd-compressed on the wire (REPLICA_APPEND_COMPRESSED);
        the peer stores the exact bytes. Returns append()'s answer and the bytes sent."""
        p = self.append_compressed_begin(topic, partition, incarnation, batches, durable, level)
        return (*p.result(), p.sent)

    def append_compressed_begin(self, topic: str, partition: int, incarnation: str,
                                batches: bytes | memoryview, durable: bool = False,
                                level: int = 3) -> PendingAppend:
        """append_compressed() in two steps, as append_begin()."""
        import zstandard

        packed = zstandard.ZstdCompressor(level=level).compress(batches)
        acks = M.ACKS_DURABLE if durable else M.ACKS_WRITTEN
        corr = self._ch.begin(M.Api.REPLICA_APPEND_COMPRESSED, CompressedHead(
            topic, partition, incarnation, acks, M.CODEC_ZSTD, len(batches)), packed)
        return PendingAppend(self._ch, M.Api.REPLICA_APPEND_COMPRESSED, corr, len(packed))

    def gap(self, topic: str, partition: int, incarnation: str, start: int, end: int,
            reason: int, durable: bool = False) -> int:
        """Record on the peer that offsets start..end-1 will never be shipped (reason: 1 the
        source's retention deleted them, 2 older than max_age); `start` must be the mirror's log
        end. Returns the mirror's new log end (`end`)."""
        acks = M.ACKS_DURABLE if durable else M.ACKS_WRITTEN
        r = self._ch.request(M.Api.REPLICA_GAP, M.ReplicaGapRequest(
            topic, partition, incarnation, acks, start, end, reason))
        return int(r.log_end_offset)

    def ping(self, timeout: float | None = None) -> None:
        """One round trip (API_VERSIONS): raises when the peer does not answer in time (within
        `timeout` seconds, default the link's)."""
        self._ch.request(M.Api.API_VERSIONS, M.ApiVersionsRequest("edgebus-replicator"), timeout)

    def commit_offsets(self, group_id: str, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit a consumer group's offsets of mirror topics on the peer (durable there), so
        that the group resumes from them after a failover. Raises the first partition's error."""
        parts = [G.OffsetCommitPartition(t, p, off) for (t, p), off in sorted(offsets.items())]
        resp = self._ch.request(M.Api.OFFSET_COMMIT,
                                G.OffsetCommitRequest(group_id, G.NO_GENERATION, "", parts))
        for r in resp.partitions:
            if r.error_code:
                raise error_for_code(r.error_code, r.error_message)

    def close(self) -> None:
        self._ch.close()

    def __enter__(self) -> ReplicaLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["READ_BYTES", "BatchReader", "PartitionRead", "PendingAppend", "ReplicaLink",
           "StoredBatch", "TopicInfo", "client_context"]
