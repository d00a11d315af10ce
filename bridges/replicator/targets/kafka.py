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
from bridges.replicator.targets.kafka_errors import KafkaUnavailableError, ReportedErrors, kafka_error
from edgebus import PartitionRead, Record, TopicInfo
from edgebus.errors import (
    IncarnationMismatchError,
    NotAMirrorError,
    ReplicaDivergedError,
)

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message, Producer
    from confluent_kafka.admin import AdminClient

log = logging.getLogger("edgebus.replicator")

SOURCE_HEADER = "edgebus-source"
# A gap marker (docs/FORMAT.md 7.10): offsets the link will never ship (retention, max_age).
GAP_HEADER, GAP_KEY = "edgebus-gap", b"edgebus-gap"
GAP_REASONS = {1: "retention", 2: "max_age"}  # edgebus.log.gaps.GAP_RETENTION, GAP_MAX_AGE
POLL_S = 0.05  # one wait for delivery reports; the deadline is the link's request timeout
# One shipment: whole source batches up to about this many records. Every record of it must be
# answered before the next goes, so a small one is answered soon even on a slow broker (a
# heavy backlog shipped as one 4 MiB read could never be answered within a short timeout).
SHIP_RECORDS = 4000
# Setting a session up (connections, metadata, the tail of each partition) may take longer than
# an answer to a shipment: on a loaded machine a short heartbeat's timeout would fail every
# setup, and the link would never come up. A half-open link is still noticed within two
# heartbeats once the session ships (ship, heartbeat).
SETUP_TIMEOUT_S = 10.0


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


def _offset(msg: Message) -> int:
    off = msg.offset()
    assert off is not None  # a delivered or consumed record has one
    return off


class KafkaClients:
    """The three librdkafka clients a link uses, made on connect and dropped on close."""

    def __init__(self, cfg: KafkaConfig, node: str, link: str, timeout: float) -> None:
        self.cfg, self.node, self.link, self.timeout = cfg, node, link, timeout
        self.setup = max(timeout, SETUP_TIMEOUT_S)
        self.producer: Producer | None = None
        self.consumer: Consumer | None = None
        self.admin: AdminClient | None = None
        self.reported = ReportedErrors()  # a refused login reaches only error_cb

    def heartbeat(self, timeout: float) -> None:
        """A round trip to the cluster (both directions' heartbeat): a metadata request naming
        no topic, so its answer is small whatever the cluster holds."""
        from confluent_kafka import KafkaException

        assert self.admin is not None
        try:
            self.admin.list_topics(timeout=timeout)
        except KafkaException as e:
            raise kafka_error(e, f"Kafka at {self.cfg.bootstrap}") from None

    def base(self) -> dict[str, Any]:
        return {**self.cfg.client, "client.id": self.cfg.client.get(
                    "client.id", f"edgebus-{self.node}-{self.link}"), "error_cb": self.reported,
                "socket.timeout.ms": int(self.setup * 1000),
                "reconnect.backoff.max.ms": 2000}

    def open(self, producer: bool = True) -> None:
        from confluent_kafka import Consumer, KafkaException, Producer
        from confluent_kafka.admin import AdminClient

        self.close()
        self.admin = AdminClient(self.base())
        self.consumer = Consumer({
            **self.base(), "group.id": f"edgebus-replicator-{self.node}-{self.link}",
            "enable.auto.commit": False, "enable.partition.eof": True,
            "auto.offset.reset": "error",  # a position gone from the log is a gap, not a skip
            "isolation.level": "read_committed", "fetch.wait.max.ms": 100})
        if producer:
            self.producer = Producer({
                "linger.ms": 5, **self.base(),  # the config may set linger and compression
                # Idempotence: retries inside librdkafka (a lost connection, a lost answer) are
                # deduplicated by the broker and keep the order; with the gapless guarantee a
                # failure that would leave a hole behind a later success stops the producer.
                "enable.idempotence": True, "enable.gapless.guarantee": True, "acks": "all",
                "message.timeout.ms": 0,  # never give a record up (the session does that)
                "request.timeout.ms": int(self.setup * 1000)})
        self.reported.auth = None
        try:
            self.admin.list_topics(timeout=self.setup)
        except KafkaException as e:
            self.admin.poll(0)  # serve error_cb: why the connection failed
            self.close()
            raise kafka_error(e, f"Kafka at {self.cfg.bootstrap}", self.reported) from None

    def close(self) -> None:
        producer, consumer = self.producer, self.consumer
        self.producer = self.consumer = self.admin = None  # never reused, even if closing fails
        try:
            if producer is not None:
                from confluent_kafka import KafkaException

                try:
                    # A new session reads the tail afresh; what this producer still holds must
                    # not land after that: drop the queue, give in-flight requests a moment.
                    producer.purge(in_queue=True, in_flight=False)
                    producer.flush(min(self.timeout, 2.0))
                    producer.purge(in_queue=True, in_flight=True)
                    producer.flush(0)
                except KafkaException as e:
                    # Purging in-flight requests of an idempotent producer can leave it fatally
                    # failed (_GAPLESS_GUARANTEE); flush then raises. It is dropped all the same.
                    log.info("Kafka producer closed in error: %s", e)
        finally:
            if consumer is not None:
                consumer.close()

    def partitions(self, topic: str) -> int | None:
        """The topic's partition count at the destination, or None when it has none."""
        from confluent_kafka import KafkaException

        assert self.admin is not None
        try:
            # All topics, not this one: a metadata request naming a missing topic makes a
            # broker with auto.create.topics.enable create it, with its default partitions.
            md = self.admin.list_topics(timeout=self.setup)
        except KafkaException as e:
            raise kafka_error(e, f"Kafka at {self.cfg.bootstrap}") from None
        t = md.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            return None
        return len(t.partitions)

    def ensure_topic(self, topic: str, partitions: int) -> None:
        """Create `topic` with `partitions` if it does not exist; refuse one with fewer."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        assert self.admin is not None
        have = self.partitions(topic)
        if have is None:
            fut = self.admin.create_topics(
                [NewTopic(topic, partitions, self.cfg.replication_factor)],
                request_timeout=self.setup)[topic]
            try:
                fut.result(self.setup)
                log.info("created %s with %d partition(s) at Kafka %s", topic, partitions,
                         self.cfg.bootstrap)
            except KafkaException as e:
                if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise kafka_error(e, f"creating {topic} at Kafka {self.cfg.bootstrap}"
                                      ) from None
            have = self.partitions(topic)
            if have is None:
                raise KafkaUnavailableError(f"{topic} at Kafka {self.cfg.bootstrap} was created "
                                             "but is not in its metadata yet")
        if have < partitions:
            raise NotAMirrorError(
                f"{topic} at Kafka {self.cfg.bootstrap} has {have} partition(s), its local topic "
                f"{partitions}: partition p goes to partition p, so add partitions there "
                "(kafka-topics --alter --partitions) or map the topic to another name")

    def tail(self, topic: str, partition: int) -> tuple[Message | None, int]:
        """(the last record of the partition or None, the offset after it). Reads from the high
        watermark - 1 to the end: a broker whose watermark counts batches rather than records
        (Tansu's memory store) still gives the true last record."""
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        assert self.consumer is not None
        c = self.consumer
        try:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, partition),
                                             timeout=self.setup)
            if hi <= lo:
                return None, hi
            c.assign([TopicPartition(topic, partition, max(lo, hi - 1))])
            last = None
            deadline = time.monotonic() + self.setup
            while True:
                m = c.poll(POLL_S)
                if m is None:
                    if time.monotonic() > deadline:
                        raise KafkaUnavailableError(
                            f"reading the end of {topic}-{partition} at Kafka "
                            f"{self.cfg.bootstrap} timed out")
                    continue
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        break
                    raise kafka_error(KafkaException(err), f"reading {topic}-{partition}")
                last = m
            return last, (_offset(last) + 1 if last is not None else hi)
        except KafkaException as e:
            raise kafka_error(e, f"reading {topic}-{partition} at Kafka {self.cfg.bootstrap}"
                              ) from None
        finally:
            c.unassign()


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
