"""Ingress: MQTT messages in, records appended, PUBACKs out only after the append.

Threads: paho's callbacks run on the network thread (connection.py) and only route the message and
queue it here; the producer's callbacks run on its I/O thread and only record the outcome; one
worker thread (`run`) hands each record to the producer (`Producer.send`) and sends the acks.

Batching, order and retries are the producer's (edgebus.Producer with ordered retries, made in
clients.py): records of a partition are batched while the previous batch of that partition is
being appended, so nothing waits for a timer; a batch that fails with a retriable error (say the
supervisor restarts: in-flight batches fail, and may or may not have been written) is sent again
after a backoff, before anything newer of its partition, for as long as it takes. So order per
key is kept, and a record is appended at least once. Its messages stay unacknowledged meanwhile,
so the broker's receive window fills and it stops sending: memory is bounded by the window
(mqtt.receive_maximum, which the network thread enforces by not reading).

What reaches this module's callback is an outcome: appended (the message's ack may leave, in
arrival order: window.py), or failed for good. A record too large for its topic (send() says so
at once, from the topic's max_message_bytes) is dead-lettered; any other final error (the topic
was deleted, the partition went offline after a storage error) is retried here after a backoff,
never dropped and never acknowledged meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from bridges.mqtt import routes as R
from bridges.mqtt.clients import EdgebusClient
from bridges.mqtt.config import BridgeConfig
from bridges.mqtt.metrics import Metrics
from bridges.mqtt.window import AckWindow, Held, Ticket, digest
from edgebus import RecordMetadata
from edgebus.backoff import backoff_delay
from edgebus.errors import EdgebusError, RecordTooLargeError

log = logging.getLogger("edgebus.bridge.mqtt")

# A route for messages that match no ingress route (possible with overlapping broker-side
# subscriptions, or a session that kept an old subscription): dead-lettered, never dropped.
_UNROUTED_FILTER = "(no route)"
# What a dead letter keeps of its payload when even the dead letter is too large for its topic.
DEAD_LETTER_KEEP = 1024


class Ingress:
    def __init__(self, cfg: BridgeConfig, metrics: Metrics, edgebus: EdgebusClient) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.edgebus = edgebus
        self.router = R.Router(cfg.ingress_routes())
        self._unrouted = R.IngressRoute(
            filter=_UNROUTED_FILTER, topic=cfg.dead_letter.topic,
            dead_letter_topic=cfg.dead_letter.topic,
            max_dead_letter_payload=cfg.dead_letter.max_payload_bytes,
            max_record_bytes=cfg.edgebus.max_batch_bytes)
        self.conn: Any = None  # MqttConnection, set by the bridge
        self._cond = threading.Condition()
        self._window = AckWindow()
        self._inbox: deque[Held] = deque()  # to hand to the producer, in arrival order
        self._failed: deque[tuple[Held, BaseException]] = deque()  # final failures, to handle
        self._retry: deque[tuple[float, Held]] = deque()  # (when, record) to send again
        self._held = 0
        self._stopping = False
        self._backoff_lo = cfg.edgebus.retry_backoff_ms / 1000
        self._backoff_hi = cfg.edgebus.retry_backoff_max_ms / 1000
        self._window_max = cfg.mqtt.receive_maximum
        self._failures = 0  # final failures in a row (their backoff)
        self._appended_since_sync = False
        self._producer_retries = 0

    @property
    def subscriptions(self) -> list[tuple[str, int]]:
        return [(r.filter, r.qos) for r in self.router.routes]

    # --- network thread --------------------------------------------------------------------------
    def can_read(self) -> bool:
        """False while the in-flight window is full: the network thread then reads nothing, so the
        broker keeps the rest (and paho buffers at most one more packet)."""
        return not self._stopping and self._held < self._window_max \
            and len(self._window) < self._window_max

    def on_connected(self, generation: int, session_present: bool) -> None:
        with self._cond:
            self._window.new_connection(generation, session_present)

    def on_message(self, msg: Any, generation: int, session_present: bool) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = None
        payload = bytes(msg.payload)
        qos, retain, dup = int(msg.qos), bool(msg.retain), bool(msg.dup)
        self.metrics.inc("in_received")
        if dup:
            self.metrics.inc("in_redelivered")
        if qos == 0:
            self.metrics.inc("in_qos0")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("received gen %d mid %d qos %d dup %d retain %d %s %r", generation, msg.mid,
                      qos, dup, retain, topic, payload[:80])
        dg = digest(payload) if qos else b""
        with self._cond:
            held = self._window.match(msg.mid, qos, dup, topic or "", dg)
            if held is not None:
                log.debug("merged gen %d mid %d with a held record", generation, msg.mid)
                self.metrics.inc("in_merged")
                self._window.add(generation, msg.mid, qos, topic or "", dg, held, merged=True)
                self._cond.notify()
                return
        try:
            held = self._to_record(msg, topic, payload, qos, retain, dup)
            if held is None:  # a copy recorded through another subscription (routes.Router)
                self.metrics.inc("in_skipped_copies")
                with self._cond:
                    self._window.add(generation, msg.mid, qos, topic or "", dg,
                                     Held("", None, b"", [], 0, done=True))
                    self._cond.notify()
                return
        except Exception as e:  # a bug here must not leave the message neither stored nor acked
            log.exception("cannot route a message from %r", topic)
            out = self._unrouted.dead_letter(f"internal error while routing: {e!r}", None,
                                             payload, R.message_headers(topic or "", qos, retain,
                                                                        dup))
            held = Held(out.dead_letter_topic, None, out.value, out.headers,
                        R.record_size(None, out.value, out.headers), dead_letter=True,
                        route=self._unrouted)
        with self._cond:
            self._window.add(generation, msg.mid, qos, topic or "", dg, held)
            self._inbox.append(held)
            self._held += 1
            self.metrics.set("in_pending", self._held)
            self._cond.notify()

    def _to_record(self, msg: Any, topic: str | None, payload: bytes, qos: int, retain: bool,
                   dup: bool) -> Held | None:
        props = getattr(msg, "properties", None)
        user = list(getattr(props, "UserProperty", None) or [])
        ctype = getattr(props, "ContentType", None) if props is not None else None
        if topic is None:
            out: R.Accepted | R.Rejected = self._unrouted.dead_letter(
                "the MQTT topic is not valid UTF-8", None, payload,
                R.message_headers("", qos, retain, dup))
        else:
            route = self.router.route(topic, getattr(props, "SubscriptionIdentifier", None) or ())
            if isinstance(route, R.Skip):
                return None
            if route is None:
                self.metrics.inc("in_unrouted")
                route = self._unrouted
                out = route.dead_letter(f"no ingress route matches topic {topic!r}", None, payload,
                                        R.message_headers(topic, qos, retain, dup, user, ctype))
            else:
                out = route.process(topic, payload, qos, retain, dup, user, ctype)
        if isinstance(out, R.Accepted):
            return Held(out.topic, out.key, out.value, out.headers,
                        R.record_size(out.key, out.value, out.headers), route=route)
        return Held(out.dead_letter_topic, out.key, out.value, out.headers,
                    R.record_size(out.key, out.value, out.headers), dead_letter=True,
                    route=self._unrouted if topic is None else route)

    # --- producer I/O thread ---------------------------------------------------------------------
    def _on_outcome(self, held: Held, result: RecordMetadata | BaseException) -> None:
        """The record's final outcome (the producer has done its retries). Runs under the
        producer's lock: only record it and wake the worker."""
        with self._cond:
            if isinstance(result, BaseException):
                self._failed.append((held, result))
            else:
                self._appended(held)
            self._cond.notify()

    # --- the worker ------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """The worker loop; returns when stop is set (drain() first for a clean exit)."""
        if self.edgebus.connect(stop) is None:
            return
        while not stop.is_set():
            with self._cond:
                now = time.monotonic()
                self._take_failures(now)
                sends = list(self._inbox)
                self._inbox.clear()
                while self._retry and self._retry[0][0] <= now:
                    sends.append(self._retry.popleft()[1])
                acks = self._window.ready()
                if not acks and not sends:
                    wait = self._retry[0][0] - now if self._retry else 1.0
                    self._cond.wait(max(0.001, wait))
                    continue
            for held in sends:
                self._send(held)
            self._send_acks(acks)

    def drain(self, timeout: float) -> bool:
        """Stop reading new messages and wait until every held record is appended and acked."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._stopping = True
            while self._held or len(self._window):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def _send(self, held: Held) -> None:
        """Hand one record to the producer; its outcome comes to _on_outcome."""
        producer = self.edgebus.producer
        try:
            assert producer is not None
            fut = producer.send(held.topic, held.value, key=held.key, headers=held.headers)
        except RecordTooLargeError as e:  # for its topic: known before anything is sent
            if self._too_large(held, e):
                self._send(held)  # to the dead-letter topic (cut to fit if need be)
                return
            fut = None
            err: EdgebusError = e
        except EdgebusError as e:  # the producer is closing, a topic vanished: try again later
            fut, err = None, e
        if fut is None:
            with self._cond:
                self._failed.append((held, err))
                self._cond.notify()
            return
        fut.add_both(lambda result: self._on_outcome(held, result))

    def _appended(self, held: Held) -> None:
        """Under _cond."""
        held.release()  # done; the payload is not kept
        self._held -= 1
        self.metrics.inc("in_dead_lettered" if held.dead_letter else "in_appended")
        self.metrics.set("in_pending", self._held)
        self._appended_since_sync = True
        if self._failures:
            log.info("appending again")
            self._failures = 0
        if not self._held:
            self._cond.notify_all()  # drain() waits for this

    def _take_failures(self, now: float) -> None:
        """Under _cond: final failures. Too large: dead-lettered; anything else: sent again
        after a backoff (in the order they failed)."""
        while self._failed:
            held, err = self._failed.popleft()
            if isinstance(err, RecordTooLargeError) and self._too_large(held, err):
                self._retry.appendleft((now, held))  # the topic's limit was lowered meanwhile
                continue
            delay = backoff_delay(self._failures, self._backoff_lo, self._backoff_hi)
            self._failures += 1
            self._retry.append((now + delay, held))
            self.metrics.inc("in_append_retries")
            self.metrics.set("edgebus_connected", 0)
            msg = (f"append to {held.topic} failed ({self._held} records held, retrying in "
                   f"{delay:.2f} s): {type(err).__name__}: {err}")
            self.metrics.error(msg)
            log.warning("%s", msg)

    def _too_large(self, held: Held, err: BaseException) -> bool:
        """Make `held` the dead letter of its message (or, if it is one already, cut it); False
        if there is nothing left to cut (then it is retried like any other failure)."""
        route = held.route if isinstance(held.route, R.IngressRoute) else self._unrouted
        if held.dead_letter:
            # Even the dead-letter record is refused: keep only a little of the payload.
            cut = held.value[:DEAD_LETTER_KEEP] if len(held.value) > DEAD_LETTER_KEEP else b""
            if cut == held.value:
                return False
            held.value = cut
        else:
            out = route.dead_letter(f"the append was refused: {err}", held.key, held.value,
                                    held.headers)
            held.topic, held.value, held.headers = out.dead_letter_topic, out.value, out.headers
            held.dead_letter = True
        held.size = R.record_size(held.key, held.value, held.headers)
        return True

    def sync_metrics(self) -> None:
        """Copy the producer's counters into the bridge's (called before each status write)."""
        producer = self.edgebus.producer
        if producer is None:
            return
        m = producer.metrics()["producer-metrics"]
        self.metrics.set("in_batches", int(m["batch-send-total"]))
        retries = int(m["batch-retry-total"])
        with self._cond:
            appended, self._appended_since_sync = self._appended_since_sync, False
            new, self._producer_retries = retries - self._producer_retries, retries
        if new:
            self.metrics.inc("in_append_retries", new)
        if new and not appended:
            self.metrics.set("edgebus_connected", 0)  # retrying, and nothing got through
        elif appended:
            self.metrics.set("edgebus_connected", 1)

    def _send_acks(self, tickets: list[Ticket]) -> None:
        sent = dropped = 0
        debug = log.isEnabledFor(logging.DEBUG)
        for t in tickets:
            # A ticket whose ack cannot go (or goes but is never read) stays remembered in the
            # window: its redelivery will be recognised, not appended again.
            if self.conn is not None and self.conn.ack(t.generation, t.mid, t.qos):
                sent += 1
                if debug:
                    log.debug("acked gen %d mid %d", t.generation, t.mid)
            else:
                dropped += 1
                if debug:
                    log.debug("ack dropped gen %d mid %d (connection gone)", t.generation, t.mid)
        if sent:
            self.metrics.inc("in_acked", sent)
            self.conn.wake()
        if dropped:
            self.metrics.inc("in_acks_dropped", dropped)
        if tickets:
            with self._cond:
                self._cond.notify_all()  # drain() waits for the window to empty
