"""Consumer-group request and response bodies (APIs 10-18). Layouts are in docs/FORMAT.md.

The API table that names them is edgebus.protocol.registry.

Assignment is computed by the coordinator in the supervisor (it knows every topic's partition
count), so JoinGroup carries each member's subscription and SyncGroup hands out the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgebus.protocol.codec import I8, I16, I32, I64, STR, Array, Message

# --- limits (each with its reason) ---------------------------------------------------------------
# Group ids appear in log lines, in describe output and in every committed-offset key.
MAX_GROUP_ID = 255
# Commit metadata is stored with every committed offset and replayed at start.
MAX_COMMIT_METADATA = 4096
# A session shorter than this cannot be kept alive by a heartbeat thread on a loaded host.
MIN_SESSION_TIMEOUT_MS = 100
# Kafka's group.max.session.timeout.ms: a dead member must not hold partitions longer than this.
MAX_SESSION_TIMEOUT_MS = 30 * 60 * 1000
# The rebalance timeout (a Kafka consumer's max.poll.interval.ms) is bounded only by its int32,
# as in Kafka: it is how long a live member may take to rejoin (a dead one is removed when its
# connection closes, or after its session), and consumers that process for long set it to
# hours (Kafka Streams once defaulted to the int32 maximum).
MAX_REBALANCE_TIMEOUT_MS = 2**31 - 1
# Members of one group: each holds coordinator state and is part of every rebalance.
MAX_GROUP_MEMBERS = 1024
# Groups known to the coordinator (with members or committed offsets): bounds its memory.
MAX_GROUPS = 10_000

# Special values.
NO_GENERATION = -1  # OffsetCommit from a client that is not a group member (manual assignment)
NO_OFFSET = -1  # OffsetFetch / DescribeGroup: nothing committed
PROTOCOL_TYPE = "consumer"

# ResetOffsets.to
RESET_EARLIEST, RESET_LATEST, RESET_OFFSET, RESET_TIMESTAMP = 0, 1, 2, 3


@dataclass
class TopicPartitions(Message):
    topic: str
    partitions: list[int]
    FIELDS = (("topic", STR), ("partitions", Array(I32)))


# --- JoinGroup -----------------------------------------------------------------------------------
@dataclass
class JoinGroupRequest(Message):
    group_id: str
    member_id: str  # "" for a new member
    client_id: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    topics: list[str]
    assignors: list[str]  # names, in the member's order of preference
    owned: list[TopicPartitions] = field(default_factory=list)
    FIELDS = (
        ("group_id", STR), ("member_id", STR), ("client_id", STR),
        ("session_timeout_ms", I32), ("rebalance_timeout_ms", I32),
        ("topics", Array(STR)), ("assignors", Array(STR)), ("owned", Array(TopicPartitions)),
    )


@dataclass
class JoinGroupResponse(Message):
    generation: int
    member_id: str
    assignor: str
    members: list[str]
    FIELDS = (
        ("generation", I32), ("member_id", STR), ("assignor", STR), ("members", Array(STR)),
    )


# --- SyncGroup -----------------------------------------------------------------------------------
@dataclass
class SyncGroupRequest(Message):
    group_id: str
    generation: int
    member_id: str
    FIELDS = (("group_id", STR), ("generation", I32), ("member_id", STR))


@dataclass
class SyncGroupResponse(Message):
    assignment: list[TopicPartitions]
    FIELDS = (("assignment", Array(TopicPartitions)),)


# --- Heartbeat / LeaveGroup ----------------------------------------------------------------------
@dataclass
class HeartbeatRequest(Message):
    group_id: str
    generation: int
    member_id: str
    FIELDS = (("group_id", STR), ("generation", I32), ("member_id", STR))


@dataclass
class LeaveGroupRequest(Message):
    group_id: str
    member_id: str
    FIELDS = (("group_id", STR), ("member_id", STR))


# --- OffsetCommit --------------------------------------------------------------------------------
@dataclass
class OffsetCommitPartition(Message):
    topic: str
    partition: int
    offset: int
    metadata: str = ""
    FIELDS = (("topic", STR), ("partition", I32), ("offset", I64), ("metadata", STR))


@dataclass
class OffsetCommitRequest(Message):
    group_id: str
    generation: int  # NO_GENERATION when the client is not a member
    member_id: str
    offsets: list[OffsetCommitPartition]
    FIELDS = (
        ("group_id", STR), ("generation", I32), ("member_id", STR),
        ("offsets", Array(OffsetCommitPartition)),
    )


@dataclass
class OffsetCommitResult(Message):
    topic: str
    partition: int
    error_code: int
    error_message: str
    FIELDS = (("topic", STR), ("partition", I32), ("error_code", I16), ("error_message", STR))


@dataclass
class OffsetCommitResponse(Message):
    commit_time: int
    partitions: list[OffsetCommitResult]
    FIELDS = (("commit_time", I64), ("partitions", Array(OffsetCommitResult)))


# --- OffsetFetch ---------------------------------------------------------------------------------
@dataclass
class OffsetFetchRequest(Message):
    group_id: str
    partitions: list[TopicPartitions]  # empty = every partition the group has committed
    FIELDS = (("group_id", STR), ("partitions", Array(TopicPartitions)))


@dataclass
class CommittedOffset(Message):
    topic: str
    partition: int
    offset: int  # NO_OFFSET when nothing is committed
    metadata: str
    commit_time: int  # -1 when nothing is committed
    FIELDS = (
        ("topic", STR), ("partition", I32), ("offset", I64), ("metadata", STR),
        ("commit_time", I64),
    )


@dataclass
class OffsetFetchResponse(Message):
    offsets: list[CommittedOffset]
    FIELDS = (("offsets", Array(CommittedOffset)),)


# --- ListGroups / DescribeGroup ------------------------------------------------------------------
@dataclass
class GroupListing(Message):
    group_id: str
    state: str
    assignor: str
    members: int
    FIELDS = (("group_id", STR), ("state", STR), ("assignor", STR), ("members", I32))


@dataclass
class ListGroupsResponse(Message):
    groups: list[GroupListing]
    FIELDS = (("groups", Array(GroupListing)),)


@dataclass
class DescribeGroupRequest(Message):
    group_id: str
    FIELDS = (("group_id", STR),)


@dataclass
class MemberDescription(Message):
    member_id: str
    client_id: str
    pid: int
    session_timeout_ms: int
    assignment: list[TopicPartitions]
    FIELDS = (
        ("member_id", STR), ("client_id", STR), ("pid", I32), ("session_timeout_ms", I32),
        ("assignment", Array(TopicPartitions)),
    )


@dataclass
class PartitionLag(Message):
    topic: str
    partition: int
    committed: int  # NO_OFFSET when nothing is committed
    metadata: str
    commit_time: int
    log_end_offset: int  # -1 when the partition no longer exists
    lag: int  # log_end_offset - committed; -1 when either is unknown
    member_id: str  # the member it is assigned to, "" if none
    FIELDS = (
        ("topic", STR), ("partition", I32), ("committed", I64), ("metadata", STR),
        ("commit_time", I64), ("log_end_offset", I64), ("lag", I64), ("member_id", STR),
    )


@dataclass
class DescribeGroupResponse(Message):
    group_id: str
    state: str
    generation: int
    assignor: str
    members: list[MemberDescription]
    partitions: list[PartitionLag]
    FIELDS = (
        ("group_id", STR), ("state", STR), ("generation", I32), ("assignor", STR),
        ("members", Array(MemberDescription)), ("partitions", Array(PartitionLag)),
    )


# --- ResetOffsets --------------------------------------------------------------------------------
@dataclass
class ResetOffsetsRequest(Message):
    group_id: str
    topic: str
    partitions: list[int]  # empty = every partition of the topic
    to: int  # RESET_EARLIEST, RESET_LATEST, RESET_OFFSET or RESET_TIMESTAMP
    value: int  # the offset (RESET_OFFSET) or ms since the epoch (RESET_TIMESTAMP); else 0
    dry_run: int  # 1 = compute and return the new offsets without committing them
    FIELDS = (
        ("group_id", STR), ("topic", STR), ("partitions", Array(I32)), ("to", I8),
        ("value", I64), ("dry_run", I8),
    )


@dataclass
class OffsetReset(Message):
    topic: str
    partition: int
    previous: int  # NO_OFFSET when nothing was committed
    offset: int
    FIELDS = (("topic", STR), ("partition", I32), ("previous", I64), ("offset", I64))


@dataclass
class ResetOffsetsResponse(Message):
    offsets: list[OffsetReset]
    FIELDS = (("offsets", Array(OffsetReset)),)
