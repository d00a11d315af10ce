"""Every request and response body, as plain data classes. Layouts are in docs/FORMAT.md.

Each API has a fixed numeric key (never reused) and a version range; a request names the version
it uses. Version 0 is the only version of every API so far.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from edgebus.protocol.codec import BYTES, I8, I16, I32, I64, STR, Array
from edgebus.protocol.codec import Message as Message  # re-exported: M.Message is used across the tree


class Api(IntEnum):
    API_VERSIONS = 0
    METADATA = 1
    CREATE_TOPIC = 2
    DELETE_TOPIC = 3
    PRODUCE = 4
    FETCH = 5
    LIST_OFFSETS = 6
    STATUS = 7
    JOIN_GROUP = 10
    SYNC_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    OFFSET_COMMIT = 14
    OFFSET_FETCH = 15
    LIST_GROUPS = 16
    DESCRIBE_GROUP = 17
    RESET_OFFSETS = 18
    ALTER_TOPIC_CONFIG = 20
    SHM_ATTACH = 32  # transport APIs start at 32 (edgebus/shm, edgebus/server/listeners/shm.py)
    FETCH_STANDING = 33  # a FETCH that re-arms itself after each answer (shm links, Unix sockets)
    REPLICA_HELLO = 40  # replication APIs start at 40 (docs/REPLICATION.md)
    REPLICA_APPEND = 41
    PROMOTE_TOPIC = 42
    REPLICA_FETCH = 43
    REPLICA_GAP = 44
    REPLICA_APPEND_COMPRESSED = 45
    INIT_PRODUCER_ID = 50  # idempotent and transactional producers start at 50 (FORMAT.md 7.12)
    ADD_PARTITIONS_TO_TXN = 51
    TXN_OFFSET_COMMIT = 52
    END_TXN = 53
    LIST_TRANSACTIONS = 54  # what the coordinator holds, for `edgebus txn list`


# Special timestamps for ListOffsets, as in Kafka.
LATEST = -1
EARLIEST = -2

ACKS_NONE, ACKS_WRITTEN, ACKS_DURABLE = 0, 1, 2
ACKS_BY_NAME = {"none": ACKS_NONE, "written": ACKS_WRITTEN, "durable": ACKS_DURABLE}


@dataclass
class ConfigEntry(Message):
    name: str
    value: str
    FIELDS = (("name", STR), ("value", STR))


# --- ApiVersions ---------------------------------------------------------------------------------
@dataclass
class ApiVersionsRequest(Message):
    client_software: str = "edgebus-python"
    FIELDS = (("client_software", STR),)


@dataclass
class ApiVersionRange(Message):
    api_key: int
    min_version: int
    max_version: int
    FIELDS = (("api_key", I16), ("min_version", I16), ("max_version", I16))


@dataclass
class ApiVersionsResponse(Message):
    server_version: str
    apis: list[ApiVersionRange]
    FIELDS = (("server_version", STR), ("apis", Array(ApiVersionRange)))


# --- Metadata ------------------------------------------------------------------------------------
@dataclass
class MetadataRequest(Message):
    topics: list[str] = field(default_factory=list)  # empty = all topics
    FIELDS = (("topics", Array(STR)),)


@dataclass
class PartitionMetadata(Message):
    partition: int
    log_start_offset: int
    log_end_offset: int
    size_bytes: int
    segments: int
    FIELDS = (
        ("partition", I32), ("log_start_offset", I64), ("log_end_offset", I64),
        ("size_bytes", I64), ("segments", I32),
    )


@dataclass
class TopicMetadata(Message):
    name: str
    error_code: int
    error_message: str
    configs: list[ConfigEntry]
    partitions: list[PartitionMetadata]
    FIELDS = (
        ("name", STR), ("error_code", I16), ("error_message", STR),
        ("configs", Array(ConfigEntry)), ("partitions", Array(PartitionMetadata)),
    )


@dataclass
class MetadataResponse(Message):
    topics: list[TopicMetadata]
    FIELDS = (("topics", Array(TopicMetadata)),)


# --- Create / delete topic -----------------------------------------------------------------------
@dataclass
class CreateTopicRequest(Message):
    name: str
    partitions: int
    configs: list[ConfigEntry] = field(default_factory=list)
    FIELDS = (("name", STR), ("partitions", I32), ("configs", Array(ConfigEntry)))


@dataclass
class DeleteTopicRequest(Message):
    name: str
    FIELDS = (("name", STR),)


@dataclass
class AlterTopicConfigRequest(Message):
    name: str
    configs: list[ConfigEntry]  # the settings to change; the others keep their values
    FIELDS = (("name", STR), ("configs", Array(ConfigEntry)))


@dataclass
class AlterTopicConfigResponse(Message):
    configs: list[ConfigEntry]  # every setting of the topic after the change
    FIELDS = (("configs", Array(ConfigEntry)),)


@dataclass
class Empty(Message):
    FIELDS = ()


# --- Produce -------------------------------------------------------------------------------------
@dataclass
class ProduceRequest(Message):
    topic: str
    partition: int
    acks: int
    batch: Any  # bytes or memoryview of one whole record batch
    FIELDS = (("topic", STR), ("partition", I32), ("acks", I8), ("batch", BYTES))


@dataclass
class ProduceResponse(Message):
    topic: str
    partition: int
    base_offset: int
    append_time: int
    log_start_offset: int
    FIELDS = (
        ("topic", STR), ("partition", I32), ("base_offset", I64), ("append_time", I64),
        ("log_start_offset", I64),
    )


# --- Fetch ---------------------------------------------------------------------------------------
@dataclass
class FetchPartition(Message):
    topic: str
    partition: int
    offset: int
    max_bytes: int
    FIELDS = (("topic", STR), ("partition", I32), ("offset", I64), ("max_bytes", I32))


@dataclass
class FetchRequest(Message):
    max_wait_ms: int
    min_bytes: int
    max_bytes: int
    partitions: list[FetchPartition]
    FIELDS = (
        ("max_wait_ms", I32), ("min_bytes", I32), ("max_bytes", I32),
        ("partitions", Array(FetchPartition)),
    )


@dataclass
class FetchedPartition(Message):
    topic: str
    partition: int
    error_code: int
    error_message: str
    high_watermark: int
    log_start_offset: int
    records: Any  # whole batches, concatenated
    FIELDS = (
        ("topic", STR), ("partition", I32), ("error_code", I16), ("error_message", STR),
        ("high_watermark", I64), ("log_start_offset", I64), ("records", BYTES),
    )


@dataclass
class FetchResponse(Message):
    partitions: list[FetchedPartition]
    FIELDS = (("partitions", Array(FetchedPartition)),)


# --- ListOffsets ---------------------------------------------------------------------------------
@dataclass
class ListOffsetsPartition(Message):
    topic: str
    partition: int
    timestamp: int  # LATEST, EARLIEST, or ms since the epoch
    FIELDS = (("topic", STR), ("partition", I32), ("timestamp", I64))


@dataclass
class ListOffsetsRequest(Message):
    partitions: list[ListOffsetsPartition]
    FIELDS = (("partitions", Array(ListOffsetsPartition)),)


@dataclass
class ListedOffset(Message):
    topic: str
    partition: int
    error_code: int
    error_message: str
    offset: int  # -1 when no record has a timestamp at or after the one asked for
    timestamp: int
    FIELDS = (
        ("topic", STR), ("partition", I32), ("error_code", I16), ("error_message", STR),
        ("offset", I64), ("timestamp", I64),
    )


@dataclass
class ListOffsetsResponse(Message):
    partitions: list[ListedOffset]
    FIELDS = (("partitions", Array(ListedOffset)),)


# --- Status (operator view; JSON because it is for people and grows often) ------------------------
@dataclass
class StatusResponse(Message):
    json: Any  # UTF-8 JSON; bytes (i32 length) because it grows with the number of partitions
    FIELDS = (("json", BYTES),)


# --- ShmAttach (the shared-memory transport; docs/FORMAT.md section 6) ---------------------------
@dataclass
class ShmAttachRequest(Message):
    request_ring_bytes: int  # wanted data bytes of the client -> supervisor ring (a power of two)
    response_ring_bytes: int  # wanted data bytes of the supervisor -> client ring
    FIELDS = (("request_ring_bytes", I32), ("response_ring_bytes", I32))


@dataclass
class ShmAttachResponse(Message):
    """Sent with four file descriptors (SCM_RIGHTS), in this order: the memfd holding both rings,
    the eventfd the supervisor waits on, the eventfd the client's reader waits on, the eventfd a
    client writer waits on for space."""

    request_ring_bytes: int
    response_ring_bytes: int
    response_ring_offset: int  # where the second ring's header starts in the memfd
    map_bytes: int  # size of the memfd (both rings)
    fd_count: int  # 4
    FIELDS = (
        ("request_ring_bytes", I32), ("response_ring_bytes", I32), ("response_ring_offset", I64),
        ("map_bytes", I64), ("fd_count", I32),
    )


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


# --- Idempotent and transactional producers (docs/FORMAT.md 7.12) --------------------------------
@dataclass
class InitProducerIdRequest(Message):
    """A producer id for an idempotent producer (transactional_id ""), or the id and next epoch
    of a transactional id (fencing every older instance, aborting what it left open)."""

    transactional_id: str  # "" = an idempotent producer without transactions
    transaction_timeout_ms: int  # transactional: an open transaction is aborted after this
    producer_id: int = -1  # transactional: the id this instance had, -1 for a new instance
    producer_epoch: int = -1
    FIELDS = (("transactional_id", STR), ("transaction_timeout_ms", I32), ("producer_id", I64),
              ("producer_epoch", I16))


@dataclass
class InitProducerIdResponse(Message):
    producer_id: int
    producer_epoch: int
    FIELDS = (("producer_id", I64), ("producer_epoch", I16))


@dataclass
class TxnPartition(Message):
    topic: str
    partition: int
    FIELDS = (("topic", STR), ("partition", I32))


@dataclass
class AddPartitionsToTxnRequest(Message):
    """The partitions the open transaction will write (it begins with the first); all or none."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    partitions: list[TxnPartition]
    FIELDS = (("transactional_id", STR), ("producer_id", I64), ("producer_epoch", I16),
              ("partitions", Array(TxnPartition)))


@dataclass
class TxnOffset(Message):
    topic: str
    partition: int
    offset: int  # the next offset the group will read
    metadata: str = ""
    FIELDS = (("topic", STR), ("partition", I32), ("offset", I64), ("metadata", STR))


@dataclass
class TxnOffsetCommitRequest(Message):
    """Consumer offsets of `group_id` committed if and when the transaction commits (Kafka's
    AddOffsetsToTxn and TxnOffsetCommit in one request)."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    group_id: str
    offsets: list[TxnOffset]
    FIELDS = (("transactional_id", STR), ("producer_id", I64), ("producer_epoch", I16),
              ("group_id", STR), ("offsets", Array(TxnOffset)))


@dataclass
class EndTxnRequest(Message):
    transactional_id: str
    producer_id: int
    producer_epoch: int
    commit: int  # 1 commit, 0 abort
    FIELDS = (("transactional_id", STR), ("producer_id", I64), ("producer_epoch", I16),
              ("commit", I8))


@dataclass
class TxnPartitionInfo(Message):
    topic: str
    partition: int
    first_offset: int  # the transaction's first batch there; -1: added, nothing written yet
    FIELDS = (("topic", STR), ("partition", I32), ("first_offset", I64))


@dataclass
class TxnInfo(Message):
    """One transactional id as the coordinator holds it."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    state: str  # empty, ongoing, prepare_commit, prepare_abort
    timeout_ms: int  # transaction.timeout.ms: an ongoing transaction older is aborted
    open_ms: int  # how long the ongoing transaction has been open (since the restart); -1: none
    partitions: list[TxnPartitionInfo]
    groups: list[str]  # consumer groups whose offsets it commits
    FIELDS = (("transactional_id", STR), ("producer_id", I64), ("producer_epoch", I16),
              ("state", STR), ("timeout_ms", I32), ("open_ms", I64),
              ("partitions", Array(TxnPartitionInfo)), ("groups", Array(STR)))


@dataclass
class ProducerInfo(Message):
    """An idempotent (or transactional) producer's sequence state in one partition."""

    topic: str
    partition: int
    producer_id: int
    producer_epoch: int
    last_sequence: int  # of the last record taken
    FIELDS = (("topic", STR), ("partition", I32), ("producer_id", I64), ("producer_epoch", I16),
              ("last_sequence", I32))


@dataclass
class ListTransactionsResponse(Message):
    transactions: list[TxnInfo]
    producers: list[ProducerInfo]  # of the partitions written (or checked) since the start
    FIELDS = (("transactions", Array(TxnInfo)), ("producers", Array(ProducerInfo)))


@dataclass
class ErrorBody(Message):
    """Body of every response whose header error_code is not 0."""

    message: str
    FIELDS = (("message", STR),)
