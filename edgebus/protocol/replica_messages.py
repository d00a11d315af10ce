"""The replication APIs' bodies (REPLICA_HELLO .. REPLICA_APPEND_COMPRESSED, PROMOTE_TOPIC:
docs/REPLICATION.md, docs/FORMAT.md 7.9); their keys are messages.Api's, the table registry.py's.
Re-exported by messages.py (M.ReplicaHelloRequest is used across the tree).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgebus.protocol.codec import BYTES, I8, I16, I32, I64, STR, Array, Message
from edgebus.protocol.fetch_partition import FetchPartition


# --- Replication (docs/REPLICATION.md; docs/FORMAT.md 7.9) ---------------------------------------
@dataclass
class ReplicaHelloRequest(Message):
    """The first request on a replica listener: who the sending node is, and its token."""

    node: str
    token: str
    FIELDS = (("node", STR), ("token", STR))


@dataclass
class ReplicaHelloResponse(Message):
    node: str  # the destination's node name
    FIELDS = (("node", STR),)


@dataclass
class ReplicaAppendRequest(Message):
    """Consecutive whole batches of a source partition, exactly as the source holds them
    (offsets and append times stamped): a FETCH answer's records, forwarded as they are."""

    topic: str
    partition: int
    incarnation: str  # the source topic's; must equal the mirror's
    acks: int  # ACKS_WRITTEN or ACKS_DURABLE
    batches: Any
    FIELDS = (("topic", STR), ("partition", I32), ("incarnation", STR), ("acks", I8),
              ("batches", BYTES))


@dataclass
class ReplicaAppendCompressedRequest(Message):
    """ReplicaAppendRequest with `batches` compressed as one frame of `codec` for the wire; the
    mirror decompresses and stores the source's exact batch bytes."""

    topic: str
    partition: int
    incarnation: str
    acks: int
    codec: int  # CODEC_ZSTD
    raw_bytes: int  # length of the batches once decompressed (bounded by the frame limit)
    batches: Any
    FIELDS = (("topic", STR), ("partition", I32), ("incarnation", STR), ("acks", I8),
              ("codec", I8), ("raw_bytes", I32), ("batches", BYTES))


# Codecs of ReplicaAppendCompressedRequest (numbers never change).
CODEC_ZSTD = 1


@dataclass
class ReplicaGapRequest(Message):
    """Offsets start..end-1 of a source partition will never be shipped (deleted by the source's
    retention first, or older than the link's max_age): the mirror records the gap and its log
    end moves to `end_offset`, so that its offsets stay the source's."""

    topic: str
    partition: int
    incarnation: str
    acks: int  # ACKS_WRITTEN or ACKS_DURABLE
    start_offset: int  # must be the mirror's log end
    end_offset: int  # exclusive: where the mirror resumes
    reason: int  # 1 retention, 2 max_age (edgebus/log/gaps.py)
    FIELDS = (("topic", STR), ("partition", I32), ("incarnation", STR), ("acks", I8),
              ("start_offset", I64), ("end_offset", I64), ("reason", I8))


@dataclass
class ReplicaAppendResponse(Message):
    topic: str
    partition: int
    appended: int  # batches written
    present: int  # batches the mirror already held (a resend), not written again
    log_end_offset: int  # the mirror's, after this request: the replicator's next cursor
    FIELDS = (("topic", STR), ("partition", I32), ("appended", I32), ("present", I32),
              ("log_end_offset", I64))


@dataclass
class ReplicaFetchRequest(Message):
    """The replicator's read of its local supervisor: durable batches only, each partition's
    incarnation with them. With `sync`, unsynced data is fsynced first (group commit)."""

    sync: int  # 1: if a partition has data past its synced point, fsync, then answer
    max_bytes: int
    partitions: list[FetchPartition]
    max_wait_ms: int = 0  # with nothing to read anywhere: wait this long for an append
    FIELDS = (("sync", I8), ("max_bytes", I32), ("partitions", Array(FetchPartition)),
              ("max_wait_ms", I32))


@dataclass
class ReplicaFetchedPartition(Message):
    topic: str
    partition: int
    error_code: int
    error_message: str
    incarnation: str  # the topic's, at the time of this read ("" if it does not exist)
    log_start_offset: int
    durable_end: int  # every offset below this is fsynced; no batch at or past it is sent
    log_end_offset: int
    records: Any  # whole batches, all below durable_end
    FIELDS = (
        ("topic", STR), ("partition", I32), ("error_code", I16), ("error_message", STR),
        ("incarnation", STR), ("log_start_offset", I64), ("durable_end", I64),
        ("log_end_offset", I64), ("records", BYTES),
    )


@dataclass
class ReplicaFetchResponse(Message):
    partitions: list[ReplicaFetchedPartition]
    FIELDS = (("partitions", Array(ReplicaFetchedPartition)),)


@dataclass
class ReplicaFetchRequestV1(ReplicaFetchRequest):
    """Version 1 of REPLICA_FETCH: the same request; each partition's answer also says how many
    bytes of log lie from the fetch position to the log end (the replicator's lag in bytes)."""


@dataclass
class ReplicaFetchedPartitionV1(ReplicaFetchedPartition):
    # Bytes of whole batches from the batch holding the fetch offset to the log end, from the
    # segment sizes and the offset index (no read): at most one index interval above the exact
    # figure; -1 when the partition does not exist.
    bytes_to_end: int = -1
    FIELDS = (*ReplicaFetchedPartition.FIELDS, ("bytes_to_end", I64))  # type: ignore[assignment]


@dataclass
class ReplicaFetchResponseV1(Message):
    partitions: list[ReplicaFetchedPartitionV1]
    FIELDS = (("partitions", Array(ReplicaFetchedPartitionV1)),)


@dataclass
class PromoteTopicRequest(Message):
    """Make a mirror an ordinary writable topic (after its source is gone for good)."""

    name: str
    FIELDS = (("name", STR),)
