"""The peer target: another edgebus node, an offset-preserving mirror (docs/REPLICATION.md).

On the peer, topic T is a mirror whose mirror_of is "<this node>/T": same partitions, offsets,
append times and batch bytes. The cursor is the mirror's log end; a batch is appended only at
exactly that offset, and one the mirror already holds is compared (offset, length, CRC) and
skipped by the peer itself (Partition.append_replica).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bridges.replicator.config import TlsConfig
from edgebus import PartitionRead, ReplicaLink, TopicInfo, client_context
from edgebus.errors import IncarnationMismatchError, NotAMirrorError, TopicExistsError


def _opt(p: Path | None) -> str | None:
    return None if p is None else str(p)


class PeerTarget:
    def __init__(self, name: str, address: str, node: str, token: str, durable: bool = True,
                 tls: TlsConfig | None = None, timeout: float = 10.0,
                 compression: str = "none") -> None:
        self.name = name
        self.address = address
        self.node = node
        self.token = token
        self.durable = durable
        self.tls = tls
        self.timeout = timeout
        self.compression = compression  # "zstd": appends compressed on the wire only
        self.wire_bytes = 0  # bytes of batches as sent (compressed or not), for the metrics
        self._ctx = None if tls is None else client_context(
            _opt(tls.ca), _opt(tls.cert), _opt(tls.key))
        self._link: ReplicaLink | None = None
        self._known: dict[str, TopicInfo] = {}  # mirrors checked on this connection

    def connect(self) -> None:
        self.close()
        self._link = ReplicaLink(self.address, self.node, self.token, self.timeout, tls=self._ctx,
                                 server_name=self.tls.server_name if self.tls else None)

    @property
    def link(self) -> ReplicaLink:
        if self._link is None:
            self.connect()
        assert self._link is not None
        return self._link

    def _mirror(self, topic: str, source: TopicInfo) -> TopicInfo:
        known = self._known.get(topic)
        if known is not None and known.partitions >= source.partitions:
            return known
        want = f"{self.node}/{topic}"
        info = self.link.describe(topic)
        if info is None:
            try:
                self.link.create_mirror(topic, source, want)
            except TopicExistsError:
                # The link sees only its own node's mirrors, so a topic it cannot see but cannot
                # create is one of the peer's own: most often the mirror promoted at a failover,
                # with this (old source) node back. Hold this topic only; the others ship on.
                raise NotAMirrorError(
                    f"{self.address}: topic {topic!r} there is not a mirror of {want} (it was "
                    "promoted with `edgebus topics promote` after a failover, or made there by "
                    "other means), so it is not shipped; to replicate it again, delete or "
                    "rename it there, or leave it out of this link's topics") from None
            info = self.link.describe(topic)
            assert info is not None
        if info.mirror_of != want:
            raise NotAMirrorError(
                f"{self.address}: topic {topic!r} there is "
                + (f"a mirror of {info.mirror_of}" if info.mirror_of else "an ordinary topic")
                + f", not a mirror of {want}; rename one of them")
        if info.incarnation != source.incarnation:
            raise IncarnationMismatchError(
                f"{self.address}: the mirror of {topic!r} holds incarnation {info.incarnation}, "
                f"the source topic is now incarnation {source.incarnation} (deleted and created "
                "again); delete the mirror there to start a new one")
        self._known[topic] = info
        return info

    def cursor(self, topic: str, partition: int, source: TopicInfo) -> int:
        self._mirror(topic, source)
        info = self.link.describe(topic)
        assert info is not None
        if partition >= info.partitions:
            raise NotAMirrorError(f"{self.address}: the mirror of {topic!r} has "
                                  f"{info.partitions} partitions, the source {source.partitions}")
        return info.end_offsets[partition]

    def ship(self, topic: str, partition: int, incarnation: str, read: PartitionRead
             ) -> tuple[int, int]:
        return self.ship_begin(topic, partition, incarnation, read)()

    def ship_begin(self, topic: str, partition: int, incarnation: str, read: PartitionRead
                   ) -> Callable[[], tuple[int, int]]:
        """ship() in two steps (bridges/replicator/inflight.py): the append is sent now, and
        the function returned waits for the peer's answer; until then nothing else is sent on
        the link. The runner reads the next batches from its source meanwhile."""
        if self.compression == "zstd":
            pending = self.link.append_compressed_begin(topic, partition, incarnation,
                                                        read.data, self.durable)
        else:
            pending = self.link.append_begin(topic, partition, incarnation, read.data,
                                             self.durable)
        self.wire_bytes += pending.sent

        def finish() -> tuple[int, int]:
            _, present, end = pending.result()
            return end, present

        return finish

    def gap(self, topic: str, partition: int, incarnation: str, start: int, end: int,
            reason: int) -> int:
        """The mirror records the gap (docs/FORMAT.md 4.9) and its log end becomes `end`."""
        return self.link.gap(topic, partition, incarnation, start, end, reason, self.durable)

    def heartbeat(self, timeout: float | None = None) -> None:
        self.link.ping(timeout)

    def commit_group_offsets(self, group_id: str, offsets: dict[tuple[str, int], int]) -> None:
        self.link.commit_offsets(group_id, offsets)

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
        self._link = None
        self._known.clear()
