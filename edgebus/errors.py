"""The one error tree of edgebus.

Every error that can cross the wire has a fixed numeric code: names may change, numbers may not.
`retriable` says whether the same request may succeed if tried again later. Operator-facing errors
carry a `hint` saying what to do.
"""

from __future__ import annotations

from edgebus.error_base import EdgebusError

# Re-exported: every error is imported from here (local_errors.py holds those never on the wire).
from edgebus.local_errors import (
    BrokerUnavailableError,
    ClosedError,
    ConfigError,
    DataDirLockedError,
    IllegalStateError,
    OperationTimeoutError,
    ServiceInstallError,
    SocketDirError,
    SocketInUseError,
    TargetUnavailableError,
    TransportUnavailableError,
    UntrustedSocketError,
)

# --- raised by the broker and sent over the wire -------------------------------------------------


class UnknownServerError(EdgebusError):
    code = 1


class CorruptRecordError(EdgebusError):
    """A batch failed its CRC or structural checks (or its stored offsets are out of sequence).

    Where known, `topic`, `partition` and `offset` name the first offset that cannot be read, and
    `next_offset` the first one after the damage (None when only the server knows it: the wire
    carries the message alone). A reader may skip the damage with
    `consumer.seek(TopicPartition(e.topic, e.partition), e.next_offset or e.offset + 1)`."""

    code = 2

    def __init__(self, message: str = "", *, topic: str | None = None,
                 partition: int | None = None, offset: int | None = None,
                 next_offset: int | None = None) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.next_offset = next_offset


class InvalidRequestError(EdgebusError):
    """A well-framed request whose contents are invalid."""

    code = 3


class UnsupportedVersionError(EdgebusError):
    code = 4
    hint = "upgrade the client or the supervisor so that their protocol versions overlap"


class UnknownTopicError(EdgebusError):
    code = 5
    hint = "create it with `edgebus topics create NAME` or declare it under `topics:` in the config"


class UnknownPartitionError(EdgebusError):
    code = 6


class TopicExistsError(EdgebusError):
    code = 7


class InvalidTopicError(EdgebusError):
    code = 8


class RecordTooLargeError(EdgebusError):
    code = 9
    hint = "split the record, or raise max_message_bytes on the topic"


class OffsetOutOfRangeError(EdgebusError):
    """The requested offset is below the log start or above the log end."""

    code = 10


class DiskFullError(EdgebusError):
    code = 11
    retriable = True
    hint = "free space on the data directory's filesystem or lower retention"


class StorageError(EdgebusError):
    """An I/O error on the log (for example a failed fsync); the partition needs recovery."""

    code = 12
    hint = ("check the kernel log (dmesg) and the disk (a filesystem gone read-only must be "
            "repaired and remounted read-write first); restart the supervisor to run recovery")


class ShuttingDownError(EdgebusError):
    code = 13
    retriable = True


class IllegalGenerationError(EdgebusError):
    """A group member used a generation that is no longer current."""

    code = 14


class UnknownMemberError(EdgebusError):
    code = 15


class RebalanceInProgressError(EdgebusError):
    code = 16
    retriable = True


class GroupNotEmptyError(EdgebusError):
    code = 17
    hint = "stop the group's consumers first"


class UnknownGroupError(EdgebusError):
    code = 18


class InconsistentGroupProtocolError(InvalidRequestError):
    """A member's group protocols do not fit the group's: no protocol in common, or a native
    member and a leader-assigned (classic Kafka) group, which cannot share one assignment."""

    code = 23
    hint = "give every member of a group the same kind of client or a common assignor"


class FencedInstanceError(EdgebusError):
    """A static member's old process: a newer process with its `group.instance.id` took its
    place in the group."""

    code = 25
    hint = "two processes share one group.instance.id: give each its own"


class GroupFullError(EdgebusError):
    """A new member for a group that already has the most members it may have."""

    code = 24
    retriable = True


class RequestTimedOutError(EdgebusError):
    code = 19
    retriable = True


class ProtocolError(EdgebusError):
    """The peer broke the framing or protocol; the connection is closed."""

    code = 20


class TooManyConnectionsError(EdgebusError):
    """The supervisor refused a new connection: it has limits.max_connections, or this client's
    user has limits.max_connections_per_uid. Sent as the refused connection's only frame
    (correlation id 0, docs/FORMAT.md section 7)."""

    code = 30
    retriable = True
    hint = ("close idle clients of this user, or raise limits.max_connections_per_uid / "
            "limits.max_connections in the supervisor's config")


class ServerBusyError(EdgebusError):
    """A fetch was refused because the responses queued for all connections together reached
    limits.max_output_total_bytes (clients that do not read their answers hold it)."""

    code = 31
    retriable = True
    hint = ("retry shortly; `edgebus status` shows the clients holding queued output "
            "(output_bytes); limits.max_output_total_bytes bounds the total")


class TopicLimitError(EdgebusError):
    """A topic or partitions were not created: the supervisor holds limits.max_topics topics or
    limits.max_partitions partitions (each partition holds open files and directories, so a
    client inventing names must not exhaust file descriptors or inodes)."""

    code = 32
    hint = ("delete topics no longer used (`edgebus topics delete`), or raise limits.max_topics / "
            "limits.max_partitions in the supervisor's config")


# --- replication (docs/REPLICATION.md); 40-49 ---------------------------------------------------


class MirrorReadOnlyError(EdgebusError):
    """A produce to a mirror topic: only its replication link writes it."""

    code = 40
    hint = "write to the source node's topic, or `edgebus topics promote` the mirror after a failover"


class NotAMirrorError(EdgebusError):
    """A replica append to a topic that is not a mirror (or mirrors another source)."""

    code = 41


class IncarnationMismatchError(EdgebusError):
    """The source topic was deleted and created again since the mirror was made: its offsets
    are a new sequence, and mixing them into the old mirror would lie."""

    code = 42
    hint = "delete the mirror topic on the destination (or rename it) to start a new mirror"


class ReplicaDivergedError(EdgebusError):
    """A replica batch differs from the batch the mirror already holds at that offset."""

    code = 43


class AuthenticationError(EdgebusError):
    """A replica link's token or certificate was refused."""

    code = 44
    hint = "check the link's token (replica.tokens_file on the destination) or its TLS certificates"


class NotAuthenticatedError(EdgebusError):
    """A request on a replica listener before REPLICA_HELLO, or one the link may not make."""

    code = 45


# --- access control (docs/SECURITY.md); 50-59 ---------------------------------------------------


class AuthorizationError(EdgebusError):
    """The access rules do not let this principal do this operation on this resource. The
    message names the principal, the operation, the resource and the rule (or default policy)
    that decided; `operation` and `resource` (`topic:NAME`, `group:NAME`, `cluster`) are set
    where it was raised (the wire carries the message alone)."""

    code = 50
    hint = ("an operator can allow it with `edgebus acl add PRINCIPAL OPERATION RESOURCE` "
            "(docs/SECURITY.md)")

    def __init__(self, message: str = "", *, operation: str | None = None,
                 resource: str | None = None) -> None:
        super().__init__(message)
        self.operation = operation
        self.resource = resource


# --- idempotent and transactional producers (docs/FORMAT.md 7.12); 60-69 -------------------------


class OutOfOrderSequenceError(EdgebusError):
    """A batch of an idempotent producer whose sequence number does not continue that producer's
    last one in the partition (a batch in between was lost): nothing was appended."""

    code = 60


class DuplicateSequenceError(EdgebusError):
    """A batch of an idempotent producer resent after more newer batches were appended than the
    supervisor remembers: it was appended before (its offset is no longer known); not again."""

    code = 61


class ProducerFencedError(EdgebusError):
    """A newer instance of this transactional id started (or the supervisor aborted this
    instance's transaction after its timeout, bumping the epoch): this producer may not write."""

    code = 62
    hint = "close this producer; only the newest instance of a transactional id may write"


class InvalidTxnStateError(EdgebusError):
    """A request that does not fit the transaction's state: a send outside a transaction of a
    transactional producer, a commit with nothing begun, an unknown transactional id."""

    code = 63


class ConcurrentTransactionsError(EdgebusError):
    """The previous transaction of this transactional id is still being completed."""

    code = 64
    retriable = True


_BY_CODE: dict[int, type[EdgebusError]] = {}


def _register(cls: type[EdgebusError]) -> None:
    for sub in cls.__subclasses__():
        if sub.code in _BY_CODE and _BY_CODE[sub.code] is not sub:
            raise AssertionError(f"duplicate error code {sub.code}")
        _BY_CODE[sub.code] = sub
        _register(sub)


_register(EdgebusError)


def error_for_code(code: int, message: str = "") -> EdgebusError:
    """The exception for a wire error code (UnknownServerError for codes this client lacks)."""
    cls = _BY_CODE.get(code, UnknownServerError)
    return cls(message or cls.__name__)


NO_ERROR = 0

# Every error, those of local_errors.py and error_base.py included: import them from here.
__all__ = [
    "NO_ERROR",
    "AuthenticationError",
    "AuthorizationError",
    "BrokerUnavailableError",
    "ClosedError",
    "ConcurrentTransactionsError",
    "ConfigError",
    "CorruptRecordError",
    "DataDirLockedError",
    "DiskFullError",
    "DuplicateSequenceError",
    "EdgebusError",
    "FencedInstanceError",
    "GroupFullError",
    "GroupNotEmptyError",
    "IllegalGenerationError",
    "IllegalStateError",
    "IncarnationMismatchError",
    "InconsistentGroupProtocolError",
    "InvalidRequestError",
    "InvalidTopicError",
    "InvalidTxnStateError",
    "MirrorReadOnlyError",
    "NotAMirrorError",
    "NotAuthenticatedError",
    "OffsetOutOfRangeError",
    "OperationTimeoutError",
    "OutOfOrderSequenceError",
    "ProducerFencedError",
    "ProtocolError",
    "RebalanceInProgressError",
    "RecordTooLargeError",
    "ReplicaDivergedError",
    "RequestTimedOutError",
    "ServerBusyError",
    "ServiceInstallError",
    "ShuttingDownError",
    "SocketDirError",
    "SocketInUseError",
    "StorageError",
    "TargetUnavailableError",
    "TooManyConnectionsError",
    "TopicExistsError",
    "TopicLimitError",
    "TransportUnavailableError",
    "UnknownGroupError",
    "UnknownMemberError",
    "UnknownPartitionError",
    "UnknownServerError",
    "UnknownTopicError",
    "UnsupportedVersionError",
    "UntrustedSocketError",
    "error_for_code",
]
