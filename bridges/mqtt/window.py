"""The acknowledgement window, without I/O: which PUBACKs may leave, and in what order.

Rules kept here (each is tested in tests/bridges/test_mqtt_window.py):

1. A message is acknowledged only after its record is appended (`Held.done`), never before.
2. PUBACKs leave in the order the PUBLISH packets arrived on the connection (MQTT 3.1.1 4.6.0-2,
   MQTT 5 4.6.0-3): a done message waits behind an earlier one that is not done yet.
3. A message is acknowledged only on the connection it arrived on. When the connection changes, the
   tickets of the old one leave the window; their records are still appended (the bridge holds
   them, and without a session the broker would not send them again).
4. In a resumed session (session present), the broker sends again, with the same packet id and the
   DUP flag, every message whose PUBACK it has not processed: those the bridge had not acknowledged
   yet, and those whose PUBACK was lost with the connection (written but never read by the broker,
   or never written). A redelivery that matches a recent delivery of the previous connections
   (same packet id, topic and payload digest) is attached to that delivery's record instead of
   being appended again; if that record is appended, the ack leaves at once. Nothing is matched
   without a resumed session (packet ids start over), nor after the first fresh (non-DUP) message
   of a connection (brokers resend first). The assumption, stated: in one session, a redelivery
   with the same packet id, topic and payload as a message the bridge received is that message.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field

# Deliveries remembered for matching redeliveries: the acknowledged ones of the current connection
# (a broker that falls behind may not have processed thousands of PUBACKs when the connection
# drops) plus the unacknowledged ones. Each is a small object (no payload): about 1.5 MB.
MAX_HISTORY = 8192
MAX_CANDIDATES = 2 * MAX_HISTORY


def digest(payload: bytes) -> bytes:
    """What a delivery remembers of its payload (not the payload: memory stays small)."""
    return hashlib.blake2b(payload, digest_size=16).digest()


@dataclass(eq=False)
class Held:
    """A message's record held by the bridge until it is appended."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes | None]]
    size: int
    dead_letter: bool = False  # the record goes to a dead-letter topic
    done: bool = False         # appended (at the configured acks level)
    route: object = None       # the ingress route (to dead-letter it later if it cannot be appended)

    def release(self) -> None:
        """Appended: the payload is no longer needed (deliveries may keep a reference to this)."""
        self.done = True
        self.value, self.headers = b"", []


@dataclass(eq=False)
class Ticket:
    """One delivery of a message on one connection: what to acknowledge, and for which record."""

    generation: int
    mid: int
    qos: int
    topic: str
    digest: bytes
    held: Held
    merged: bool = field(default=False)  # a redelivery attached to a record already held


class AckWindow:
    def __init__(self) -> None:
        self.generation = 0
        self._order: deque[Ticket] = deque()
        self._history: deque[Ticket] = deque(maxlen=MAX_HISTORY)
        self._candidates: dict[int, Ticket] = {}
        self.dropped = 0  # tickets that left with their connection, unacknowledged

    def __len__(self) -> int:
        return len(self._order)

    def new_connection(self, generation: int, session_present: bool) -> None:
        """A connection was accepted: tickets of earlier ones can no longer be acknowledged."""
        if session_present:
            for t in (*self._history, *self._order):  # oldest first: newer ids replace older
                self._candidates.pop(t.mid, None)
                self._candidates[t.mid] = t
            while len(self._candidates) > MAX_CANDIDATES:
                del self._candidates[next(iter(self._candidates))]
        else:
            self._candidates.clear()
        self.dropped += len(self._order)
        self._order.clear()
        self._history.clear()
        self.generation = generation

    def match(self, mid: int, qos: int, dup: bool, topic: str, payload_digest: bytes) -> Held | None:
        """The record already held for this delivery if it is a redelivery (rule 4), else None."""
        if qos == 0:
            return None
        if not dup:
            # Brokers resend the unacknowledged messages first, right after CONNACK; a fresh
            # message means that is over, so the candidates can go.
            self._candidates.clear()
            return None
        old = self._candidates.get(mid)
        if old is None or old.topic != topic or old.digest != payload_digest:
            return None
        del self._candidates[mid]
        return old.held

    def add(self, generation: int, mid: int, qos: int, topic: str, payload_digest: bytes,
            held: Held, merged: bool = False) -> Ticket:
        t = Ticket(generation, mid, qos, topic, payload_digest, held, merged)
        if qos > 0:
            if generation != self.generation:
                self.dropped += 1  # arrived on a connection that is already gone
            else:
                self._order.append(t)
        return t

    def ready(self) -> list[Ticket]:
        """Tickets whose acks may leave now, in order (rule 2), taken out of the window. They are
        remembered: if the connection drops before the broker has read their PUBACKs, the
        broker sends them again (rule 4)."""
        out = []
        order = self._order
        while order and order[0].held.done:
            out.append(order.popleft())
        self._history.extend(out)
        return out
