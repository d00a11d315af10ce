"""Ingress: MQTT messages in, records appended, PUBACKs out only after the append.

Threads: paho's callbacks run on the network thread (connection.py) and only route the message and
queue it here; the producer's callbacks run on its I/O thread and only queue the outcome; one worker
thread (`run`) does everything else under `_cond`: partition assignment, batching, retries, acks.

Batching and order. Records wait in a *lane* per (topic, partition). A lane has at most one batch in
flight: when it is idle, everything it holds (up to edgebus.max_batch_bytes) leaves as one
send_batch call, which the producer keeps as one batch (appended or failed as a whole). So batches
grow by themselves while the previous one is being appended, and nothing waits for a timer: an ack
is held exactly as long as its record's append takes, plus the ack-order rule (window.py).

Failures. When a batch fails (say the supervisor restarts: in-flight batches fail with
BrokerUnavailableError, and may or may not have been written), its records go back to the front of
their lane and are sent again after a backoff, before anything newer in that partition: order is
kept, and a record is appended at least once. Its messages stay unacknowledged meanwhile, so the
broker's receive window fills and it stops sending: memory is bounded by the window (and by
mqtt.receive_maximum, which the network thread enforces by not reading). The only error not retried is a
record too large for its topic: it is dead-lettered (a batch that fails so is split first).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bridges.mqtt import routes as R
from bridges.mqtt.clients import EdgebusClient
from bridges.mqtt.config import BridgeConfig
from bridges.mqtt.metrics import Metrics
from bridges.mqtt.window import AckWindow, Held, Ticket, digest
from edgebus import partition_for_key
from edgebus.errors import RecordTooLargeError

log = logging.getLogger("edgebus.bridge.mqtt")

# A route for messages that match no ingress route (possible with overlapping broker-side
# subscriptions, or a session that kept an old subscription): dead-lettered, never dropped.
_UNROUTED_FILTER = "(no route)"


@dataclass(eq=False)
class Lane:
    topic: str
    partition: int
    queue: deque[Held] = field(default_factory=deque)
    in_flight: list[Held] | None = None
    retry_at: float = 0.0
    backoff: float = 0.0
    singles: int = 0  # send this many records one at a time (isolating a too-large record)
    last_error: str | None = None


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
        self._inbox: deque[Held] = deque()
        self._lanes: dict[tuple[str, int], Lane] = {}
        self._results: deque[tuple[Lane, list[Held], Any]] = deque()
        self._held = 0
        self._rr: dict[str, int] = {}
        self._stopping = False
        self._max_bytes = cfg.edgebus.max_batch_bytes
        self._backoff_lo = cfg.edgebus.retry_backoff_ms / 1000
        self._backoff_hi = cfg.edgebus.retry_backoff_max_ms / 1000
        self._window_max = cfg.mqtt.receive_maximum

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
    def _on_batch_done(self, lane: Lane, items: list[Held], result: Any) -> None:
        with self._cond:
            self._results.append((lane, items, result))
            self._cond.notify()

    # --- the worker ------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """The worker loop; returns when stop is set (drain() first for a clean exit)."""
        if self.edgebus.connect(stop) is None:
            return
        while not stop.is_set():
            with self._cond:
                now = time.monotonic()
                self._apply_results(now)
                self._assign()
                acks = self._window.ready()
                sends = self._take(now)
                if not acks and not sends and not self._results:
                    self._cond.wait(self._wait_time(now))
                    continue
            self._send_acks(acks)
            for lane, items in sends:
                self._send(lane, items)

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

    def _wait_time(self, now: float) -> float:
        waits = [lane.retry_at - now for lane in self._lanes.values()
                 if lane.queue and lane.in_flight is None and lane.retry_at > now]
        return max(0.001, min(waits, default=1.0))

    def _assign(self) -> None:
        """Inbox -> lanes, in arrival order (keyed records go to their key's partition)."""
        inbox = self._inbox
        while inbox:
            held = inbox[0]
            n = self.edgebus.partitions(held.topic)
            if n is None:  # not resolved yet (only before the producer is ready)
                return
            inbox.popleft()
            if held.key is not None:
                p = partition_for_key(held.key, n)
            else:
                p = self._rr.get(held.topic, 0) % n
                self._rr[held.topic] = p + 1
            lane = self._lanes.get((held.topic, p))
            if lane is None:
                lane = self._lanes[(held.topic, p)] = Lane(held.topic, p)
            lane.queue.append(held)

    def _take(self, now: float) -> list[tuple[Lane, list[Held]]]:
        out = []
        for lane in self._lanes.values():
            if lane.in_flight is not None or not lane.queue or lane.retry_at > now:
                continue
            items = [lane.queue.popleft()]
            size = items[0].size
            if lane.singles:
                lane.singles -= 1
            else:
                while lane.queue and size + lane.queue[0].size <= self._max_bytes:
                    size += lane.queue[0].size
                    items.append(lane.queue.popleft())
            lane.in_flight = items
            out.append((lane, items))
        return out

    def _send(self, lane: Lane, items: list[Held]) -> None:
        producer = self.edgebus.producer
        self.metrics.inc("in_batches")
        try:
            assert producer is not None
            fut = producer.send_batch(
                lane.topic, [h.value for h in items], keys=[h.key for h in items],
                partition=lane.partition, record_headers=[h.headers for h in items])
        except Exception as e:  # anything: the records are retried, never dropped
            self._on_batch_done(lane, items, e)
            return
        fut.add_callback(lambda result: self._on_batch_done(lane, items, result))

    def _apply_results(self, now: float) -> None:
        while self._results:
            lane, items, result = self._results.popleft()
            lane.in_flight = None
            if not isinstance(result, BaseException):
                self._appended(lane, items)
            elif isinstance(result, RecordTooLargeError):
                self._too_large(lane, items, result)
            else:
                self._retry(lane, items, result, now)
        self.metrics.set("in_pending", self._held)
        if not self._held and not self._inbox:
            self._cond.notify_all()  # drain() waits for this

    def _appended(self, lane: Lane, items: list[Held]) -> None:
        dead = sum(1 for h in items if h.dead_letter)
        for h in items:
            h.release()  # done; the payload is not kept
        self._held -= len(items)
        self.metrics.inc("in_appended", len(items) - dead)
        if dead:
            self.metrics.inc("in_dead_lettered", dead)
        if lane.backoff:
            log.info("appending to %s-%d again", lane.topic, lane.partition)
        lane.backoff = 0.0
        lane.last_error = None
        self.metrics.set("edgebus_connected", 1)

    def _retry(self, lane: Lane, items: list[Held], err: BaseException, now: float) -> None:
        lane.queue.extendleft(reversed(items))
        lane.backoff = min(self._backoff_hi, max(self._backoff_lo, lane.backoff * 2))
        lane.retry_at = now + lane.backoff
        self.metrics.inc("in_append_retries")
        if getattr(err, "retriable", False):
            self.metrics.set("edgebus_connected", 0)
        msg = f"append to {lane.topic}-{lane.partition} failed ({len(items)} records held, " \
              f"retrying in {lane.backoff:.2f} s): {type(err).__name__}: {err}"
        self.metrics.error(msg)
        if lane.last_error != type(err).__name__:
            log.warning("%s", msg)
        lane.last_error = type(err).__name__

    def _too_large(self, lane: Lane, items: list[Held], err: BaseException) -> None:
        if len(items) > 1:
            lane.queue.extendleft(reversed(items))
            lane.singles = len(items)  # find which one: send them one by one
            return
        h = items[0]
        route = h.route if isinstance(h.route, R.IngressRoute) else self._unrouted
        if h.dead_letter:
            # Even the dead-letter record is refused: keep only a little of the payload.
            h.value = h.value[:1024]
        else:
            out = route.dead_letter(f"the append was refused: {err}", h.key, h.value, h.headers)
            h.topic, h.value, h.headers = out.dead_letter_topic, out.value, out.headers
            h.dead_letter = True
        h.size = R.record_size(h.key, h.value, h.headers)
        self._inbox.appendleft(h)  # to its dead-letter topic's lane

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
