"""The acknowledgement window, without I/O: which PUBACKs may leave, and in what order.

Rules kept here (each is tested in tests/bridges/test_window.py):

1. A message is acknowledged only after its record is appended (`Held.done`), never before.
2. PUBACKs leave in the order the PUBLISH packets arrived on the connection (MQTT 3.1.1 4.6.0-2,
   MQTT 5 4.6.0-3): a done message waits behind an earlier one that is not done yet.
3. A message is acknowledged only on the connection it arrived on. When the connection changes, the
   tickets of the old one are dropped from the window; their records are still appended (the bridge
   holds them, and without a session the broker would not send them again).
4. In a resumed session (session present), the broker sends the unacknowledged messages again with
   the same packet id and the DUP flag. Such a redelivery that matches a message the bridge still
   holds from an earlier connection (same packet id, topic and payload) is attached to that message
   instead of being appended a second time; if that record is already appended, the ack leaves at
   once. Without a resumed session nothing is matched (a packet id may then be reused by a new
   message).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

# Redelivery candidates kept at most: unacknowledged messages of earlier connections (normally at
# most one receive window, cleared when the redeliveries are over; this bounds flapping links).
MAX_CANDIDATES = 65_536


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


@dataclass(eq=False)
class Ticket:
    """One delivery of a message on one connection: what to acknowledge, and for which record."""

    generation: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    held: Held
    merged: bool = field(default=False)  # a redelivery attached to a record already held


class AckWindow:
    def __init__(self) -> None:
        self.generation = 0
        self._order: deque[Ticket] = deque()
        self._candidates: dict[int, Ticket] = {}
        self.dropped = 0  # tickets whose ack was never sent (their connection had gone)

    def __len__(self) -> int:
        return len(self._order)

    def new_connection(self, generation: int, session_present: bool) -> None:
        """A connection was accepted: tickets of earlier ones can no longer be acknowledged."""
        if session_present:
            for t in self._order:
                self._candidates.pop(t.mid, None)
                self._candidates[t.mid] = t  # a newer ticket for the same id replaces an older
            while len(self._candidates) > MAX_CANDIDATES:
                del self._candidates[next(iter(self._candidates))]  # the oldest first
        else:
            self._candidates.clear()
        self.dropped += len(self._order)
        self._order.clear()
        self.generation = generation

    def match(self, mid: int, qos: int, dup: bool, topic: str, payload: bytes) -> Held | None:
        """The record already held for this delivery if it is a redelivery (rule 4), else None."""
        if qos == 0:
            return None
        if not dup:
            # Brokers resend the unacknowledged messages first, right after CONNACK; a fresh
            # message means that is over, so the candidates (and their payloads) can go.
            self._candidates.clear()
            return None
        old = self._candidates.get(mid)
        if old is None or old.topic != topic or old.payload != payload:
            return None
        del self._candidates[mid]
        return old.held

    def add(self, generation: int, mid: int, qos: int, topic: str, payload: bytes,
            held: Held, merged: bool = False) -> Ticket:
        t = Ticket(generation, mid, qos, topic, payload, held, merged)
        if qos > 0:
            if generation != self.generation:
                self.dropped += 1  # arrived on a connection that is already gone
            else:
                self._order.append(t)
        return t

    def ready(self) -> list[Ticket]:
        """Tickets whose acks may leave now, in order (rule 2), taken out of the window."""
        out = []
        order = self._order
        while order and order[0].held.done:
            out.append(order.popleft())
        return out

    def forget_candidates(self) -> None:
        self._candidates.clear()
