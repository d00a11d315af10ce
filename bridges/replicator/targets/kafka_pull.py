"""The Kafka target as a Remote: a topic brought down from the cluster (direction: down).

One librdkafka consumer, assigned (never subscribed: no group, no committed offsets) to each
remote partition at the offset after the last one the local topic holds; pull.py reads that
position from the local topic at the start of every session.
"""

from __future__ import annotations

from typing import Any

from bridges.replicator.kafka_config import KafkaConfig
from bridges.replicator.targets.base import Pulled, RemoteRecord, TargetRefusedError
from bridges.replicator.targets.kafka import GAP_HEADER, GAP_KEY, KafkaClients, kafka_error

PULL_RECORDS = 1000  # records one pull takes at most: bounded memory per round


class KafkaRemote:
    def __init__(self, name: str, cfg: KafkaConfig, node: str, timeout: float = 10.0) -> None:
        self.name = name
        self.cfg = cfg
        self.clients = KafkaClients(cfg, node, name + "-down", timeout)
        self.timeout = timeout

    def connect_pull(self) -> None:
        self.clients.open(producer=False)

    def remote_partitions(self, topic: str) -> int | None:
        return self.clients.partitions(topic)

    def remote_start(self, topic: str, partition: int) -> int:
        from confluent_kafka import KafkaException, TopicPartition

        assert self.clients.consumer is not None
        try:
            lo, _ = self.clients.consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=self.clients.setup)
        except KafkaException as e:
            raise kafka_error(e, f"reading {topic}-{partition} at Kafka {self.cfg.bootstrap}"
                              ) from None
        return int(lo)

    def assign(self, positions: dict[tuple[str, int], int]
               ) -> dict[tuple[str, int], TargetRefusedError]:
        from confluent_kafka import TopicPartition

        assert self.clients.consumer is not None
        self.clients.consumer.assign([TopicPartition(t, p, off)
                                      for (t, p), off in positions.items()])
        return {}  # Kafka's refusals (authorization) come with the fetch, as errors

    def pull(self, wait_s: float) -> Pulled:
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        assert self.clients.consumer is not None
        out = Pulled()
        try:
            msgs = self.clients.consumer.consume(PULL_RECORDS, wait_s)
        except KafkaException as e:
            raise kafka_error(e, f"reading from Kafka {self.cfg.bootstrap}") from None
        for m in msgs:
            topic, part, off = m.topic(), m.partition(), m.offset()
            assert topic is not None and part is not None and off is not None
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    out.at_end[(topic, part)] = off
                elif err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                    out.gaps[(topic, part)] = (
                        f"the next offset is no longer at Kafka {self.cfg.bootstrap} (its "
                        f"retention deleted it before it was brought down): {err.str()}")
                elif not err.retriable() and err.code() != KafkaError._TRANSPORT:
                    raise kafka_error(KafkaException(err), f"reading {topic}-{part}")
                continue
            ts = m.timestamp()[1]
            hdrs: list[tuple[str, bytes | None]] = [
                (k, v if isinstance(v, bytes | None) else bytes(v))
                for k, v in _pairs(m.headers())]
            key = _bytes(m.key())
            # An up direction's gap marker (FORMAT.md 7.10) comes down as a gap (pull.py).
            gap = next((v.decode(errors="replace") for k, v in hdrs
                        if k == GAP_HEADER and v is not None), "") if key == GAP_KEY else ""
            out.records.setdefault((topic, part), []).append(
                RemoteRecord(off, ts, key, _bytes(m.value()), hdrs, gap=gap))
        for (topic, part), recs in out.records.items():
            # The high watermark of the last fetch answer (librdkafka's cache, no request):
            # what is still at Kafka after these records.
            try:
                _, hi = self.clients.consumer.get_watermark_offsets(TopicPartition(topic, part),
                                                                    cached=True)
            except KafkaException:
                continue
            if hi is not None and hi >= 0:
                out.behind[(topic, part)] = max(0, int(hi) - recs[-1].offset - 1)
        return out

    def heartbeat(self, timeout: float | None = None) -> None:
        self.clients.heartbeat(self.timeout if timeout is None else timeout)

    def close(self) -> None:
        self.clients.close()


def _bytes(v: Any) -> bytes | None:
    return None if v is None else bytes(v) if not isinstance(v, bytes) else v


def _pairs(headers: Any) -> list[tuple[str, Any]]:
    return [kv for kv in headers or [] if isinstance(kv, tuple)]
