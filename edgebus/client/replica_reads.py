"""What a replication read gives (client/replica.py BatchReader, client/replica_link.py
ReplicaLink.read_durable): the topic's description, the whole batches read from a partition with
its offsets, and the REPLICA_FETCH request itself (its version asked once per channel)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from edgebus import batch as B
from edgebus import format as F
from edgebus.batch import Record
from edgebus.client.channel import SyncChannel
from edgebus.errors import (
    EdgebusError,
    UnsupportedVersionError,
    error_for_code,
)
from edgebus.protocol import messages as M

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
