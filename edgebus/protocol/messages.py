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

# Bodies split out by what they hold, re-exported here (M.<name> is used across the tree).
from edgebus.protocol.fetch_partition import FetchPartition as FetchPartition
from edgebus.protocol.replica_messages import (
    CODEC_ZSTD as CODEC_ZSTD,
)
from edgebus.protocol.replica_messages import (
    PromoteTopicRequest as PromoteTopicRequest,
)
from edgebus.protocol.replica_messages import (
    ReplicaAppendCompressedRequest as ReplicaAppendCompressedRequest,
)
from edgebus.protocol.replica_messages import (
    ReplicaAppendRequest as ReplicaAppendRequest,
)
from edgebus.protocol.replica_messages import (
    ReplicaAppendResponse as ReplicaAppendResponse,
)
from edgebus.protocol.replica_messages import (
    ReplicaFetchedPartition as ReplicaFetchedPartition,
)
from edgebus.protocol.replica_messages import (
    ReplicaFetchedPartitionV1 as ReplicaFetchedPartitionV1,
)
from edgebus.protocol.replica_messages import (
    ReplicaFetchRequest as ReplicaFetchRequest,
)
from edgebus.protocol.replica_messages import (
    ReplicaFetchRequestV1 as ReplicaFetchRequestV1,
)
from edgebus.protocol.replica_messages import (
    ReplicaFetchResponse as ReplicaFetchResponse,
)
from edgebus.protocol.replica_messages import (
    ReplicaFetchResponseV1 as ReplicaFetchResponseV1,
)
from edgebus.protocol.replica_messages import (
    ReplicaGapRequest as ReplicaGapRequest,
)
from edgebus.protocol.replica_messages import (
    ReplicaHelloRequest as ReplicaHelloRequest,
)
from edgebus.protocol.replica_messages import (
    ReplicaHelloResponse as ReplicaHelloResponse,
)
from edgebus.protocol.txn_messages import (
    AddPartitionsToTxnRequest as AddPartitionsToTxnRequest,
)
from edgebus.protocol.txn_messages import (
    EndTxnRequest as EndTxnRequest,
)
from edgebus.protocol.txn_messages import (
    InitProducerIdRequest as InitProducerIdRequest,
)
from edgebus.protocol.txn_messages import (
    InitProducerIdResponse as InitProducerIdResponse,
)
from edgebus.protocol.txn_messages import (
    ListTransactionsResponse as ListTransactionsResponse,
)
from edgebus.protocol.txn_messages import (
    ProducerInfo as ProducerInfo,
)
from edgebus.protocol.txn_messages import (
    TxnInfo as TxnInfo,
)
from edgebus.protocol.txn_messages import (
    TxnOffset as TxnOffset,
)
from edgebus.protocol.txn_messages import (
    TxnOffsetCommitRequest as TxnOffsetCommitRequest,
)
from edgebus.protocol.txn_messages import (
    TxnPartition as TxnPartition,
)
from edgebus.protocol.txn_messages import (
    TxnPartitionInfo as TxnPartitionInfo,
)


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


@dataclass
class ErrorBody(Message):
    """Body of every response whose header error_code is not 0."""

    message: str
    FIELDS = (("message", STR),)
