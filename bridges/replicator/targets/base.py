"""What every replication target offers the link runner (bridges/replicator/link.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from edgebus import PartitionRead, TopicInfo
from edgebus.errors import TargetUnavailableError


class TargetRefusedError(TargetUnavailableError):
    """The target refuses one partition for now (a NATS subject no stream takes), something an
    operator can fix there: the link ships the others and asks again on a backoff
    (bridges/replicator/refused.py). Raised by Target.cursor()."""

    hint = ("the replicator retries it on its own: fix what the message names at the target; "
            "the partition's status says REFUSED until then")


class Target(Protocol):
    """One destination. Its methods may raise any EdgebusError; a retriable one (or a lost
    connection) makes the runner reconnect with backoff and read every cursor again."""

    name: str

    def connect(self) -> None:
        """Open (or reopen) the connection; raises if the target refuses us (wrong token)."""
        ...

    def cursor(self, topic: str, partition: int, source: TopicInfo) -> int:
        """The next offset the target expects for this source partition: read from the target
        itself (its log end), creating the destination for it first if there is none. Raises
        IncarnationMismatchError when the target holds another incarnation of the topic;
        TargetRefusedError when it refuses this partition for now (retried on a backoff)."""
        ...

    def ship(self, topic: str, partition: int, incarnation: str, read: PartitionRead
             ) -> tuple[int, int]:
        """Append the read's batches (contiguous, the first at the cursor; of the source topic's
        `incarnation`, read with them) and return (the target's new cursor, batches it already
        held)."""
        ...

    def heartbeat(self, timeout: float | None = None) -> None:
        """A cheap round trip: raises when the target is unreachable (a half-open link) or has
        not answered within `timeout` seconds (default: the target's request timeout)."""
        ...

    def commit_group_offsets(self, group_id: str, offsets: dict[tuple[str, int], int]) -> None:
        """Record a consumer group's committed offsets at the target (each at most the
        target's cursor of its partition), so the group resumes there after a failover."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class GapTarget(Protocol):
    """A target that can record a gap: offsets of a source partition that will never be
    shipped (the source's retention deleted them first, or they are past the topic's max_age).
    The runner uses it when the target offers it; with a target that does not, such a
    partition is held (an ERROR line, the `held` metric), never skipped silently."""

    def gap(self, topic: str, partition: int, incarnation: str, start: int, end: int,
            reason: int) -> int:
        """Record that offsets start..end-1 (start is the target's cursor) will never come, and
        return the target's new cursor (`end`). reason: edgebus.log.gaps.GAP_RETENTION or
        GAP_MAX_AGE."""
        ...
@dataclass(frozen=True)
class RemoteRecord:
    """One record of a target's topic, as a link brings it down (direction: down)."""

    offset: int  # in the target's partition
    timestamp: int  # ms
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    # An up direction's gap marker (FORMAT.md 7.11: "<start>/<end>/<reason>"), not a record:
    # pull.py counts it as a gap and writes nothing. "" for a record.
    gap: str = ""


@dataclass
class Pulled:
    """One pull: new records per (remote topic, partition), in order; the partitions at their
    end; the partitions whose next record the target no longer has (a gap), with why."""

    records: dict[tuple[str, int], list[RemoteRecord]] = field(default_factory=dict)
    at_end: dict[tuple[str, int], int] = field(default_factory=dict)  # -> the target's end
    gaps: dict[tuple[str, int], str] = field(default_factory=dict)
    # Records the target still holds after the last one pulled, per partition, when it says
    # (its lag: Kafka's high watermark, a NATS consumer's pending count).
    behind: dict[tuple[str, int], int] = field(default_factory=dict)
    answered: bool = False  # the pull was a round trip the target answered (a sign of life)
    # Partitions the target refused to read this time (a NATS pull request the link's user may
    # not publish): no longer read this session, asked again on a backoff (pull.py).
    refused: dict[tuple[str, int], TargetRefusedError] = field(default_factory=dict)


class Remote(Protocol):
    """A target that topics are brought down from (bridges/replicator/pull.py)."""

    name: str

    def connect_pull(self) -> None:
        """Open (or reopen) the connection for reading."""
        ...

    def remote_partitions(self, topic: str) -> int | None:
        """The topic's partition count at the target, None when it has no such topic."""
        ...

    def remote_start(self, topic: str, partition: int) -> int:
        """The oldest offset the target still holds."""
        ...

    def assign(self, positions: dict[tuple[str, int], int]
               ) -> dict[tuple[str, int], TargetRefusedError]:
        """Read these partitions from these offsets on (each the next record wanted); returns
        those the target refuses for now (a NATS consumer the link's user may not create),
        which are not read: the others are (pull.py asks the refused again on a backoff)."""
        ...

    def pull(self, wait_s: float) -> Pulled:
        """What came since the last pull, waiting up to wait_s when nothing did."""
        ...

    def heartbeat(self, timeout: float | None = None) -> None:
        """A round trip: raises when the target has not answered within `timeout` seconds
        (default: the remote's request timeout)."""
        ...

    def close(self) -> None: ...
