"""The bridge's side of edgebus: one Producer shared by ingress and egress, made when the
supervisor is reachable, and the partition counts of the topics the bridge writes to."""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

from bridges.mqtt.config import BridgeConfig
from bridges.mqtt.metrics import Metrics
from edgebus import Admin, Producer
from edgebus.backoff import backoff_delay
from edgebus.errors import EdgebusError, TopicExistsError, UnknownTopicError

log = logging.getLogger("edgebus.bridge.mqtt")

# The Producer's request limit: its default, or more if a batch may be larger (config allows
# up to 512 KiB; a request adds its own small header).
MAX_REQUEST_BYTES = 1024 * 1024


class EdgebusClient:
    def __init__(self, cfg: BridgeConfig, metrics: Metrics) -> None:
        self.cfg = cfg
        self.s = cfg.edgebus
        self.metrics = metrics
        self.socket = str(self.s.socket) if self.s.socket is not None else None
        self._lock = threading.Lock()
        self._producer: Producer | None = None
        self._partitions: dict[str, int] = {}

    @property
    def producer(self) -> Producer | None:
        return self._producer

    def partitions(self, topic: str) -> int | None:
        return self._partitions.get(topic)

    def connect(self, stop: threading.Event) -> Producer | None:
        """The producer, once the supervisor answers and every write topic is known (created
        first when edgebus.create_topics is on). Waits with backoff; None if stopped meanwhile."""
        attempt = 0
        while not stop.is_set():
            with self._lock:
                try:
                    if self._producer is None:
                        self._producer = self._make_producer()
                    self._resolve_topics()
                    self.metrics.set("edgebus_connected", 1)
                    return self._producer
                except EdgebusError as e:
                    self.metrics.set("edgebus_connected", 0)
                    self.metrics.error(f"edgebus: {e}")
                    if attempt == 0 or attempt % 20 == 0:
                        log.warning("waiting for edgebus: %s", e)
            stop.wait(backoff_delay(attempt, self.s.retry_backoff_ms / 1000,
                                    self.s.retry_backoff_max_ms / 1000))
            attempt += 1
        return None

    def _make_producer(self) -> Producer:
        """Ordered retries without limit (ingress.py): a record is retried, in order, until the
        supervisor takes it; the broker's window bounds what waits meanwhile."""
        batch = self.s.max_batch_bytes
        kwargs: dict[str, Any] = {
            "socket": self.socket, "acks": self.s.acks, "linger_ms": self.s.linger_ms,
            "batch_size": batch, "max_request_size": max(MAX_REQUEST_BYTES, 2 * batch),
            "retries": math.inf, "delivery_timeout_ms": None,
            "retry_backoff_ms": self.s.retry_backoff_ms,
            "retry_backoff_max_ms": self.s.retry_backoff_max_ms,
        }
        return Producer(**kwargs)

    def _resolve_topics(self) -> None:
        assert self._producer is not None
        write_topics = {r.topic for r in self.cfg.ingress}
        write_topics |= {r.dead_letter_topic or self.cfg.dead_letter.topic for r in self.cfg.ingress}
        write_topics.add(self.cfg.dead_letter.topic)
        for topic in sorted(write_topics | {r.topic for r in self.cfg.egress}):
            if topic in self._partitions:
                continue
            try:
                n = self._producer.partitions_for(topic)
            except UnknownTopicError:
                if not self.s.create_topics:
                    raise
                self._create(topic)
                n = self._producer.partitions_for(topic)
            self._partitions[topic] = n

    def _create(self, topic: str) -> None:
        with Admin(socket=self.socket) as admin:
            try:
                admin.create_topic(topic, partitions=self.s.partitions)
                log.info("created topic %s with %d partition(s)", topic, self.s.partitions)
            except TopicExistsError:
                pass

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            p, self._producer = self._producer, None
        if p is not None:
            try:
                p.close(timeout)
            except EdgebusError as e:
                log.warning("closing the producer: %s", e)
