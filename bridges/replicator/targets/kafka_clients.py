"""The librdkafka clients of a Kafka target's link (targets/kafka.py): an admin client, a producer
and a consumer made on connect and dropped on close, with what a session needs of the
destination: its partitions, a topic made to match the source, and a partition's last record.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from bridges.replicator.kafka_config import KafkaConfig
from bridges.replicator.targets.kafka_errors import KafkaUnavailableError, ReportedErrors, kafka_error
from edgebus.errors import NotAMirrorError

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message, Producer
    from confluent_kafka.admin import AdminClient

log = logging.getLogger("edgebus.replicator")

POLL_S = 0.05  # one wait for delivery reports; the deadline is the link's request timeout
# Setting a session up (connections, metadata, the tail of each partition) may take longer than
# an answer to a shipment: on a loaded machine a short heartbeat's timeout would fail every
# setup, and the link would never come up. A half-open link is still noticed within two
# heartbeats once the session ships (ship, heartbeat).
SETUP_TIMEOUT_S = 10.0


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
