"""The Kafka target: any Kafka-protocol cluster, through confluent-kafka (librdkafka).

Local topic T partition p goes to the destination topic (kafka.topic, default T) partition p,
record by record: key, value, headers and timestamp as they are, plus one header naming where the
record comes from (SOURCE_HEADER, docs/FORMAT.md 7.10):

    edgebus-source: <node>/<topic>/<partition>/<offset>/<incarnation>

The cursor is read from the destination itself at the start of every session: the last record
of the destination partition names the source offset it holds, so the next one is that plus 1.
Why that gives no gap and no duplicate is argued in docs/REPLICATION.md ("The Kafka target").
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from bridges.replicator.kafka_config import KafkaConfig
from bridges.replicator.targets.kafka_clients import (  # noqa: F401 (KafkaClients: its old path)
    POLL_S,
    SETUP_TIMEOUT_S,
    KafkaClients,
)
from bridges.replicator.targets.kafka_errors import KafkaUnavailableError, kafka_error
from edgebus import PartitionRead, Record, TopicInfo
from edgebus.errors import (
    IncarnationMismatchError,
    NotAMirrorError,
    ReplicaDivergedError,
)

if TYPE_CHECKING:
    from confluent_kafka import Message

log = logging.getLogger("edgebus.replicator")

SOURCE_HEADER = "edgebus-source"
# A gap marker (docs/FORMAT.md 7.10): offsets the link will never ship (retention, max_age).
GAP_HEADER, GAP_KEY = "edgebus-gap", b"edgebus-gap"
GAP_REASONS = {1: "retention", 2: "max_age"}  # edgebus.log.gaps.GAP_RETENTION, GAP_MAX_AGE
# One shipment: whole source batches up to about this many records. Every record of it must be
# answered before the next goes, so a small one is answered soon even on a slow broker (a
# heavy backlog shipped as one 4 MiB read could never be answered within a short timeout).
SHIP_RECORDS = 4000


def source_header(node: str, topic: str, partition: int, offset: int, incarnation: str) -> bytes:
    return f"{node}/{topic}/{partition}/{offset}/{incarnation}".encode()


def parse_source_header(value: bytes | None) -> tuple[str, str, int, int, str] | None:
    """(node, topic, partition, offset, incarnation), or None when it is not one."""
    fields = (value or b"").decode(errors="replace").split("/")
    if len(fields) != 5 or not fields[2].isdigit() or not fields[3].isdigit():
        return None
    return fields[0], fields[1], int(fields[2]), int(fields[3]), fields[4]


def header(msg: Message, name: str) -> bytes | None:
    for kv in msg.headers() or []:
        if isinstance(kv, tuple) and kv[0] == name:
            return kv[1] if isinstance(kv[1], bytes) else None
    return None


class KafkaTarget:
    # The cursor may fall inside a source batch: a shipment cut short leaves a prefix of a
    # batch at Kafka, and the next one ships the rest (link.py; records below it are skipped).
    record_cursor = True

    def __init__(self, name: str, cfg: KafkaConfig, node: str, timeout: float = 10.0) -> None:
        self.name = name
        self.cfg = cfg
        self.node = node
        self.timeout = timeout
        self.clients = KafkaClients(cfg, node, name, timeout)
        # (topic, partition) -> the destination offset the next record must land at: anything
        # else means another producer wrote there in between (docs/REPLICATION.md).
        self._next_dest: dict[tuple[str, int], int] = {}
        self._cursor: dict[tuple[str, int], int] = {}  # the next source offset, per partition
        self._answered = False
        self._ready: set[str] = set()  # destination topics checked on this connection

    def connect(self) -> None:
        self._next_dest.clear()
        self._cursor.clear()
        self._answered = False  # no shipment of this session was answered yet
        self._ready.clear()
        self.clients.open()

    def cursor(self, topic: str, partition: int, source: TopicInfo) -> int:
        dest = self.cfg.destination(topic, self.node)
        if dest not in self._ready:
            self.clients.ensure_topic(dest, source.partitions)
            self._ready.add(dest)
        last, end = self.clients.tail(dest, partition)
        self._next_dest[(topic, partition)] = end
        if last is None:
            # Nothing there yet: start at the oldest record the source still has.
            self._cursor[(topic, partition)] = source.start_offsets[partition]
            return source.start_offsets[partition]
        src = parse_source_header(header(last, SOURCE_HEADER))
        if src is None or src[:3] != (self.node, topic, partition):
            raise NotAMirrorError(
                f"{dest}-{partition} at Kafka {self.cfg.bootstrap} ends with a record (offset "
                f"{last.offset()}) that is not from {self.node}/{topic}/{partition} "
                f"({SOURCE_HEADER}: {header(last, SOURCE_HEADER)!r}): another producer writes "
                "there; give this link a topic of its own (kafka.topic)")
        if src[4] != source.incarnation:
            raise IncarnationMismatchError(
                f"{dest}-{partition} at Kafka {self.cfg.bootstrap} holds incarnation {src[4]} of "
                f"{topic}, the source topic is now incarnation {source.incarnation} (deleted and "
                "created again): map the new one to another destination topic")
        self._cursor[(topic, partition)] = src[3] + 1
        return src[3] + 1

    def ship(self, topic: str, partition: int, incarnation: str, read: PartitionRead
             ) -> tuple[int, int]:
        dest = self.cfg.destination(topic, self.node)
        records: list[Record] = []
        start = self._cursor.get((topic, partition), read.first_offset)
        end = read.first_offset
        for b in read.batches():  # whole batches (the first from the cursor on)
            if records and len(records) + (b.next_offset - b.base_offset) > SHIP_RECORDS:
                break
            records += [r for r in b.records(topic, partition) if r.offset >= start]
            end = b.next_offset
        self._send(topic, partition, dest, [(r.value, r.key, r.timestamp, [*r.headers, (
            SOURCE_HEADER, source_header(self.node, topic, partition, r.offset, incarnation))])
            for r in records], read.first_offset)
        self._cursor[(topic, partition)] = end
        return end, 0

    def gap(self, topic: str, partition: int, incarnation: str, start: int, end: int,
            reason: int) -> int:
        """Offsets start..end-1 will never be shipped: one marker record says so (key
        GAP_KEY, the text as value, GAP_HEADER start/end/reason), and its source header names
        offset end-1, so the cursor read back from the tail is `end` (docs/FORMAT.md 7.10)."""
        dest = self.cfg.destination(topic, self.node)
        why = GAP_REASONS.get(reason, str(reason))
        hdrs: list[tuple[str, str | bytes | None]] = [
            (GAP_HEADER, f"{start}/{end}/{why}".encode()),
            (SOURCE_HEADER, source_header(self.node, topic, partition, end - 1, incarnation))]
        text = f"offsets {start}..{end - 1} of {self.node}/{topic}/{partition} never shipped: {why}"
        self._send(topic, partition, dest, [(text.encode(), GAP_KEY, int(time.time() * 1000),
                                             hdrs)], start)
        self._cursor[(topic, partition)] = end
        return end

    def _send(self, topic: str, partition: int, dest: str,
              items: list[tuple[bytes | None, bytes | None, int, list[Any]]], first: int) -> None:
        """Produce (value, key, timestamp, headers) items to dest's partition and wait until
        every one is answered, each at the destination offset after the previous (_check)."""
        from confluent_kafka import KafkaException

        assert self.clients.producer is not None
        prod = self.clients.producer
        reports: list[tuple[Any, int]] = []

        def delivered(err: Any, msg: Message) -> None:
            # Never raises (it runs inside poll). Offset -1: delivered, offset not told (the
            # broker recognised an idempotent resend it already had).
            off = msg.offset() if err is None else None
            reports.append((err, -1 if off is None or off < 0 else off))

        try:
            for value, key, ts, hdrs in items:
                while True:
                    try:
                        prod.produce(dest, value, key, partition=partition,
                                     on_delivery=delivered, timestamp=ts, headers=hdrs)
                        break
                    except BufferError:  # librdkafka's queue is full: let it drain
                        prod.poll(POLL_S)
            # At most one shipment in flight per link: every record is answered before the
            # next read is shipped, so a failure is always at the end of what is there.
            # The deadline is for an answer, not for the whole shipment: it moves with each.
            # The first answer of a session waits longer: librdkafka connects and gets its
            # producer id only when the first record goes.
            wait = self.timeout if self._answered else self.clients.setup
            deadline, answered = time.monotonic() + wait, 0
            while len(reports) < len(items):
                prod.poll(POLL_S)
                if len(reports) > answered:
                    deadline, answered = time.monotonic() + self.timeout, len(reports)
                    self._answered = True
                elif time.monotonic() > deadline:
                    raise KafkaUnavailableError(
                        f"Kafka at {self.cfg.bootstrap} did not acknowledge {dest}-{partition} "
                        f"within {wait:.1f} s ({len(reports)} of {len(items)} records)")
        except KafkaException as e:
            raise kafka_error(e, f"producing to {dest}-{partition}") from None
        self._check(topic, partition, dest, first, reports)

    def _check(self, topic: str, partition: int, dest: str, first: int,
               reports: list[tuple[Any, int]]) -> None:
        """Every record must have landed, each at the destination offset after the previous:
        a record of anyone else in between (a second replicator, a producer request delivered
        after its session had given up) is reported, never passed over."""
        want = self._next_dest.get((topic, partition), -1)
        for i, (err, off) in enumerate(reports):
            if err is not None:
                good = [o for e, o in reports[i:] if e is None]
                if good:
                    log.error("link %s: %s-%d: record %d failed (%s) but later ones landed at "
                              "offsets %d..%d: a gap there", self.name, dest, partition, i,
                              err.str(), good[0], good[-1])
                raise KafkaUnavailableError(
                    f"Kafka refused a record for {dest}-{partition}: {err.str()}")
            if off < 0:
                want = -1  # not told where it landed: the next known offset is the check
                continue
            if want >= 0 and off != want:
                log.error("link %s: %s-%d: a record of source offset >= %d landed at offset %d, "
                          "%d expected: something else wrote to the partition in between "
                          "(docs/REPLICATION.md, 'The Kafka target')", self.name, dest,
                          partition, first, off, want)
                raise ReplicaDivergedError(
                    f"{dest}-{partition} at Kafka {self.cfg.bootstrap}: records of another "
                    f"producer at offsets {want}..{off - 1}, between this link's")
            want = off + 1
        self._next_dest[(topic, partition)] = want

    def heartbeat(self, timeout: float | None = None) -> None:
        self.clients.heartbeat(self.timeout if timeout is None else timeout)

    def commit_group_offsets(self, group_id: str, offsets: dict[tuple[str, int], int]) -> None:
        """Not mirrored: the destination's offsets are its own (the source offset of each
        record is in its header), so a source group's offsets mean nothing there."""

    def close(self) -> None:
        self.clients.close()
        self._ready.clear()
