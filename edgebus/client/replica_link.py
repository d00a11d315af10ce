"""One authenticated connection to a peer supervisor's replica listener (`replica.listen` there):
`ReplicaLink` creates mirror topics, appends batches at exactly the mirror's log end, records
gaps and commits a mirrored group's offsets; `client_context` is its TLS (docs/REPLICATION.md).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgebus.client import replica_errors as E
from edgebus.client.replica_reads import (
    READ_BYTES,
    FetchVersion,
    PartitionRead,
    TopicInfo,
    _read_durable,
    _topic_info,
)
from edgebus.client.replica_send import (
    AppendHead,
    CompressedHead,
    PendingAppend,
    SplitRequestChannel,
)
from edgebus.errors import (
    AuthenticationError,
    BrokerUnavailableError,
    EdgebusError,
    OperationTimeoutError,
    ProtocolError,
    UnknownTopicError,
    error_for_code,
)
from edgebus.protocol import groups as G
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol, ResponseFrame


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
