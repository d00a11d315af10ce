"""Kafka error codes for the group and admin APIs.

Kafka's codes are fixed by its protocol (`kio.schema.errors.ErrorCode`); the names the group and
admin handlers use are given here as ints. `code_of` is codec.kafka_error (edgebus's error tree
mapped once for the whole listener) with the two answers that differ for these APIs: a bad
argument is the API's own INVALID_* code, and a supervisor shutting down is
COORDINATOR_NOT_AVAILABLE (a group client then looks for the coordinator again).
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from edgebus.errors import (
    InvalidRequestError,
    MirrorReadOnlyError,
    ShuttingDownError,
    TopicLimitError,
)
from edgebus.server.kafka.codec import kafka_error

NONE = int(ErrorCode.none)
UNKNOWN_SERVER_ERROR = int(ErrorCode.unknown_server_error)
OFFSET_OUT_OF_RANGE = int(ErrorCode.offset_out_of_range)
UNKNOWN_TOPIC_OR_PARTITION = int(ErrorCode.unknown_topic_or_partition)
MESSAGE_TOO_LARGE = int(ErrorCode.message_too_large)
OFFSET_METADATA_TOO_LARGE = int(ErrorCode.offset_metadata_too_large)
COORDINATOR_NOT_AVAILABLE = int(ErrorCode.coordinator_not_available)
INVALID_TOPIC = int(ErrorCode.invalid_topic_exception)
ILLEGAL_GENERATION = int(ErrorCode.illegal_generation)
INCONSISTENT_GROUP_PROTOCOL = int(ErrorCode.inconsistent_group_protocol)
INVALID_GROUP_ID = int(ErrorCode.invalid_group_id)
UNKNOWN_MEMBER_ID = int(ErrorCode.unknown_member_id)
INVALID_SESSION_TIMEOUT = int(ErrorCode.invalid_session_timeout)
REBALANCE_IN_PROGRESS = int(ErrorCode.rebalance_in_progress)
INVALID_COMMIT_OFFSET_SIZE = int(ErrorCode.invalid_commit_offset_size)
TOPIC_ALREADY_EXISTS = int(ErrorCode.topic_already_exists)
INVALID_PARTITIONS = int(ErrorCode.invalid_partitions)
INVALID_REPLICATION_FACTOR = int(ErrorCode.invalid_replication_factor)
INVALID_REQUEST = int(ErrorCode.invalid_request)
INVALID_CONFIG = int(ErrorCode.invalid_config)
POLICY_VIOLATION = int(ErrorCode.policy_violation)
KAFKA_STORAGE_ERROR = int(ErrorCode.kafka_storage_error)
NON_EMPTY_GROUP = int(ErrorCode.non_empty_group)
GROUP_ID_NOT_FOUND = int(ErrorCode.group_id_not_found)
UNSUPPORTED_VERSION = int(ErrorCode.unsupported_version)
UNKNOWN_TOPIC_ID = int(ErrorCode.unknown_topic_id)
UNSTABLE_OFFSET_COMMIT = int(ErrorCode.unstable_offset_commit)
FENCED_LEADER_EPOCH = int(ErrorCode.fenced_leader_epoch)
UNKNOWN_LEADER_EPOCH = int(ErrorCode.unknown_leader_epoch)

def code_of(e: BaseException, invalid: int = INVALID_REQUEST) -> int:
    """The Kafka error code answering `e`; `invalid` for InvalidRequestError (each API has its
    own: INVALID_CONFIG for a bad topic setting, INVALID_PARTITIONS, ...)."""
    if type(e) is InvalidRequestError:
        return invalid
    if isinstance(e, ShuttingDownError):
        return COORDINATOR_NOT_AVAILABLE
    if isinstance(e, MirrorReadOnlyError):
        return POLICY_VIOLATION
    if isinstance(e, TopicLimitError):  # Kafka's answer to what a broker's policy refuses;
        return POLICY_VIOLATION  # clients show it with the message naming the limit
    return int(kafka_error(e))
