"""The client side of replication: read a partition's batches as stored, and append them to a
peer's mirror. What the replicator (bridges/replicator) is built on; docs/REPLICATION.md.

`BatchReader` reads whole record batches (the exact bytes of the log: offsets, append times and
CRCs as the source stamped them) from the local supervisor. `ReplicaLink` is one authenticated
connection to a peer supervisor's replica listener (`replica.listen` there): it creates mirror
topics and appends batches at exactly the mirror's log end (client/replica_link.py). What a read
gives: client/replica_reads.py. Both are importable from here, as before.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from edgebus import format as F
from edgebus.client.replica_link import (  # noqa: F401 (their old import path)
    ReplicaLink,
    _TcpChannel,
    client_context,
)
from edgebus.client.replica_reads import (
    READ_BYTES,
    FetchVersion,
    PartitionRead,
    StoredBatch,
    TopicInfo,
    _batches,
    _read_durable,
    _topic_info,
    _whole,
)
from edgebus.client.replica_send import PendingAppend
from edgebus.client.shm_channel import open_sync_channel
from edgebus.errors import error_for_code
from edgebus.heap import keep_freed_heap
from edgebus.protocol import messages as M


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


__all__ = ["READ_BYTES", "BatchReader", "PartitionRead", "PendingAppend", "ReplicaLink",
           "StoredBatch", "TopicInfo", "client_context"]
