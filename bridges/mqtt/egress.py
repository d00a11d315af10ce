"""Egress: records of an edgebus topic, read in a consumer group, published to MQTT.

Offsets are committed only after the broker acknowledged the publish (PUBACK for QoS 1, PUBCOMP for
QoS 2; for QoS 0, once paho wrote it to the socket): per partition, the committed offset is one past
the longest run of acknowledged records from the start, so a record is never committed before it
was delivered, and a crash republishes at most the records in flight (egress.max_in_flight).
paho keeps unacknowledged QoS 1/2 publishes across reconnects and sends them again, so an MQTT
outage only pauses egress.

A record that cannot be published (the topic template cannot be filled, or the broker refuses it
with an MQTT 5 reason code >= 0x80) goes to the dead-letter topic with the reason, then counts as
done. The payload is published byte for byte; with MQTT 5 the record's headers whose values are
UTF-8 become user properties.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from bridges.mqtt import routes as R
from bridges.mqtt import templates as T
from bridges.mqtt.clients import EdgebusClient
from bridges.mqtt.config import BridgeConfig, EgressSettings
from bridges.mqtt.metrics import Metrics
from edgebus import Consumer, Record, TopicPartition
from edgebus.backoff import backoff_delay
from edgebus.errors import EdgebusError

log = logging.getLogger("edgebus.bridge.mqtt")

# Longest wait in poll(): bounds the delay of commits and of noticing stop().
POLL_MS = 200
# How long a revocation waits for the acks of the partitions it takes away.
REVOKE_WAIT = 2.0
# How long one wait for a dead letter's append lasts before stop() is looked at again (the
# producer retries the append itself, for as long as it takes).
DEAD_LETTER_POLL = 1.0


_NOT_YET = object()


class PublishRouter:
    """Routes each publish acknowledgement to the egress that published it, by message id.

    paho calls on_publish holding its own lock, and publish() takes that lock: so no lock of ours
    may be held across publish(). An ack can thus arrive before its egress registered the id; it
    is then kept until the registration picks it up. Ids of publishes an egress gave up on (after
    losing its consumer) stay registered to nobody until their acks arrive, so that a late ack can
    never be taken for a newer publish that reuses the id.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: dict[int, Egress | None] = {}
        self._early: dict[int, str | None] = {}

    def register(self, mid: int, owner: Egress) -> Any:
        """_NOT_YET, or the outcome (None = delivered, else the failure) if it came already."""
        with self._lock:
            if mid in self._early:
                return self._early.pop(mid)
            self._owner[mid] = owner
            return _NOT_YET

    def forget(self, mids: list[int]) -> None:
        with self._lock:
            for mid in mids:
                if mid in self._owner:
                    self._owner[mid] = None

    def on_published(self, mid: int, failure: str | None) -> None:
        with self._lock:
            if mid not in self._owner:
                self._early[mid] = failure
                return
            owner = self._owner.pop(mid)
        if owner is not None:
            owner.on_published(mid, failure)


@dataclass(eq=False)
class Out:
    tp: TopicPartition
    offset: int
    record: Record | None = None  # kept until acknowledged, for a dead letter if refused
    done: bool = False


class Egress:
    def __init__(self, route: EgressSettings, cfg: BridgeConfig, metrics: Metrics,
                 edgebus: EdgebusClient, router: PublishRouter) -> None:
        self.route = route
        self.router = router
        self.cfg = cfg
        self.metrics = metrics
        self.edgebus = edgebus
        self.conn: Any = None  # MqttConnection, set by the bridge
        self._acks: deque[tuple[int, str | None]] = deque()  # from the network thread
        self._wake = threading.Event()
        self._by_mid: dict[int, Out] = {}
        self._parts: dict[TopicPartition, deque[Out]] = {}
        self._outstanding = 0
        self._committed: dict[TopicPartition, int] = {}
        self._consumer: Consumer | None = None
        self._stopping = False
        self._stop = threading.Event()

    # --- network thread (under paho's lock: only queue) ------------------------------------------
    def on_published(self, mid: int, failure: str | None) -> None:
        self._acks.append((mid, failure))
        self._wake.set()

    # --- the egress thread -----------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        if self.edgebus.connect(stop) is None:
            return
        attempt = 0
        while not stop.is_set():
            try:
                if self._consumer is None:
                    self._consumer = self._open()
                    attempt = 0
                self._step()
            except (EdgebusError, OSError) as e:
                self.metrics.error(f"egress {self.route.topic}: {e}")
                log.warning("egress from %s: %s; reconnecting", self.route.topic, e)
                self._reset()
                stop.wait(self._backoff(attempt))
                attempt += 1
        self._finish()

    def _open(self) -> Consumer:
        r = self.route
        c = Consumer(group_id=r.group, socket=self.edgebus.socket, enable_auto_commit=False,
                     auto_offset_reset=r.auto_offset_reset)
        c.subscribe([r.topic], listener=self)
        return c

    def _step(self) -> None:
        self._apply_acks()
        self._commit()
        room = self.route.max_in_flight - self._outstanding
        if room <= 0 or self._stopping:
            self._wake.wait(POLL_MS / 1000)
            self._wake.clear()
            return
        assert self._consumer is not None
        batches = self._consumer.poll(timeout_ms=POLL_MS, max_records=room)
        for tp, records in batches.items():
            for rec in records:
                self._publish(tp, rec)

    def _publish(self, tp: TopicPartition, rec: Record) -> None:
        self.metrics.inc("out_polled")
        out = Out(tp, rec.offset, rec)
        self._parts.setdefault(tp, deque()).append(out)
        headers = list(rec.headers or [])
        try:
            topic = self.route.mqtt_topic.render(rec.topic, rec.partition, rec.key, headers)
        except T.TemplateError as e:
            if self._dead_letter(rec, f"no MQTT topic for the record: {e}"):
                out.done, out.record = True, None
            return
        props = T.user_properties_from_headers(headers) \
            if self.route.headers_as_user_properties else None
        mid = self.conn.publish(topic, rec.value or b"", self.route.qos, self.route.retain, props)
        self._by_mid[mid] = out
        early = self.router.register(mid, self)
        if early is not _NOT_YET:
            self._acks.append((mid, early))
        self._outstanding += 1
        self.metrics.inc("out_published")
        self.metrics.set("out_in_flight", self._outstanding)

    def _apply_acks(self) -> None:
        while self._acks:
            mid, failure = self._acks.popleft()
            out = self._by_mid.pop(mid, None)
            if out is None:
                continue  # from before a reset: that record will be read and published again
            self._outstanding -= 1
            if failure is not None and out.record is not None:
                self.metrics.inc("out_failed")
                if not self._dead_letter(out.record,
                                         f"the MQTT broker refused the publish: {failure}"):
                    continue  # stopping: not committed, so it is read again next time
            else:
                self.metrics.inc("out_acked")
            out.done, out.record = True, None
        self.metrics.set("out_in_flight", self._outstanding)

    def _commit(self, only: list[TopicPartition] | None = None) -> None:
        todo: dict[TopicPartition, int] = {}
        for tp, q in self._parts.items():
            if only is not None and tp not in only:
                continue
            last = None
            while q and q[0].done:
                last = q.popleft().offset
            if last is not None:
                todo[tp] = last + 1
        if not todo or self._consumer is None:
            return
        try:
            self._consumer.commit(todo)
        except EdgebusError as e:
            # Not committed: the records may be published again after a restart (at least once).
            log.warning("egress from %s: commit failed: %s", self.route.topic, e)
            self.metrics.error(f"egress commit: {e}")
            return
        self._committed.update(todo)
        self.metrics.inc("out_committed", len(todo))

    def _dead_letter(self, rec: Record, reason: str) -> bool:
        """Append the record to the dead-letter topic, retrying until it is there (True) or the
        bridge stops (False)."""
        headers = [*list(rec.headers or []), (R.H_DLQ_REASON, reason.encode()),
                   (R.H_DLQ_ROUTE, self.route.topic.encode())]
        attempt = 0
        fut = None
        while not self._stop.is_set():
            producer = self.edgebus.producer
            try:
                assert producer is not None
                if fut is None:
                    fut = producer.send(self.cfg.dead_letter.topic, rec.value, key=rec.key,
                                        headers=headers)
                fut.get(timeout=DEAD_LETTER_POLL)
                self.metrics.inc("out_dead_lettered")
                log.warning("egress record %s-%d@%d dead-lettered: %s", rec.topic, rec.partition,
                            rec.offset, reason)
                return True
            except EdgebusError as e:
                if fut is not None and not fut.done():
                    continue  # the producer is still retrying it: sending it again would double it
                fut = None
                self.metrics.error(f"egress dead letter: {e}")
                self._stop.wait(self._backoff(attempt))
                attempt += 1
        return False

    def _backoff(self, attempt: int) -> float:
        e = self.cfg.edgebus
        return backoff_delay(attempt, e.retry_backoff_ms / 1000, e.retry_backoff_max_ms / 1000)

    # --- rebalance listener (called inside poll, on this thread) ---------------------------------
    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        deadline = time.monotonic() + REVOKE_WAIT
        while any(not o.done for tp in revoked for o in self._parts.get(tp, ())) \
                and time.monotonic() < deadline:
            self._wake.wait(0.05)
            self._wake.clear()
            self._apply_acks()
        self._commit(only=revoked)
        gone = set(revoked)
        for tp in revoked:
            self._parts.pop(tp, None)
        # Publishes still unacknowledged: their records will be read again by the new owner of
        # the partition (at least once); forget their mids here.
        self.router.forget([m for m, o in self._by_mid.items() if o.tp in gone])
        self._by_mid = {m: o for m, o in self._by_mid.items() if o.tp not in gone}
        self._outstanding = len(self._by_mid)

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("egress from %s: assigned %s", self.route.topic,
                 ", ".join(f"{tp.topic}-{tp.partition}" for tp in assigned) or "nothing")

    # --- teardown --------------------------------------------------------------------------------
    def drain(self) -> None:
        """Stop reading records; in-flight publishes are still acknowledged and committed."""
        self._stopping = True
        self._wake.set()

    def idle(self) -> bool:
        return self._outstanding == 0

    def _reset(self) -> None:
        """After losing the consumer: forget what is in flight (read again from the commit)."""
        c, self._consumer = self._consumer, None
        if c is not None:
            with contextlib.suppress(Exception):
                c.close(autocommit=False)
        self.router.forget(list(self._by_mid))
        self._by_mid.clear()
        self._parts.clear()
        self._outstanding = 0
        self.metrics.set("out_in_flight", 0)

    def _finish(self) -> None:
        self._apply_acks()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._commit()
        self._reset()
