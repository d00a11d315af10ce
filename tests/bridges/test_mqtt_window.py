"""The acknowledgement window's rules (bridges/mqtt/window.py), without a broker."""

from __future__ import annotations

import pytest

from bridges.mqtt.window import AckWindow, Held, digest

pytestmark = pytest.mark.unit


def held(n: int = 0) -> Held:
    return Held("t", None, b"%d" % n, [], 10)


def receive(w: AckWindow, gen: int, mid: int, payload: bytes = b"x", qos: int = 1,
            dup: bool = False, topic: str = "a/b") -> Held:
    dg = digest(payload)
    h = w.match(mid, qos, dup, topic, dg)
    if h is not None:
        w.add(gen, mid, qos, topic, dg, h, merged=True)
        return h
    h = Held("t", None, payload, [], 10)
    w.add(gen, mid, qos, topic, dg, h)
    return h


def mids(tickets: list) -> list[int]:
    return [t.mid for t in tickets]


def test_no_ack_before_the_append() -> None:
    w = AckWindow()
    w.new_connection(1, False)
    h = receive(w, 1, 5)
    assert w.ready() == []
    h.done = True
    assert mids(w.ready()) == [5]
    assert w.ready() == []


def test_acks_leave_in_arrival_order() -> None:
    w = AckWindow()
    w.new_connection(1, False)
    a, b, c = receive(w, 1, 1), receive(w, 1, 2), receive(w, 1, 3)
    b.done = c.done = True
    assert w.ready() == []  # 2 and 3 wait behind 1
    a.done = True
    assert mids(w.ready()) == [1, 2, 3]


def test_qos0_messages_have_no_ack() -> None:
    w = AckWindow()
    w.new_connection(1, False)
    h = receive(w, 1, 0, qos=0)
    h.done = True
    assert w.ready() == [] and len(w) == 0


def test_tickets_of_an_old_connection_are_never_acknowledged() -> None:
    w = AckWindow()
    w.new_connection(1, False)
    h = receive(w, 1, 7)
    w.new_connection(2, False)
    h.done = True
    assert w.ready() == []
    assert w.dropped == 1
    # A message still reported under the old generation (a race with the reconnect) is dropped too.
    receive(w, 1, 8).done = True
    assert w.ready() == [] and w.dropped == 2


def test_redelivery_in_a_resumed_session_is_merged_not_appended_twice() -> None:
    w = AckWindow()
    w.new_connection(1, False)
    h1 = receive(w, 1, 10, b"r1")
    h2 = receive(w, 1, 11, b"r2")
    h1.done = True  # appended, but its ack never left: the connection dropped
    w.new_connection(2, session_present=True)
    # The broker sends both again, same ids, DUP set.
    assert receive(w, 2, 10, b"r1", dup=True) is h1
    assert receive(w, 2, 11, b"r2", dup=True) is h2
    assert mids(w.ready()) == [10]  # already appended: acknowledged at once
    h2.done = True
    assert mids(w.ready()) == [11]


def test_no_merge_without_a_session_or_without_dup_or_on_different_content() -> None:
    w = AckWindow()
    w.new_connection(1, False)
    h = receive(w, 1, 10, b"r1")
    w.new_connection(2, session_present=False)  # session gone: ids may be reused
    assert receive(w, 2, 10, b"r1", dup=True) is not h
    w2 = AckWindow()
    w2.new_connection(1, False)
    h = receive(w2, 1, 10, b"r1")
    w2.new_connection(2, session_present=True)
    assert receive(w2, 2, 10, b"other", dup=True) is not h  # same id, other payload
    assert receive(w2, 2, 10, b"r1", dup=False) is not h     # not marked as a redelivery


def test_candidates_end_with_the_first_fresh_message() -> None:
    w = AckWindow()
    w.new_connection(1, False)
    h = receive(w, 1, 10, b"r1")
    w.new_connection(2, session_present=True)
    receive(w, 2, 50, b"fresh")  # redeliveries come first; this one is new
    assert receive(w, 2, 10, b"r1", dup=True) is not h


def test_candidates_survive_a_connection_that_drops_before_redelivering() -> None:
    w = AckWindow()
    w.new_connection(1, False)
    h = receive(w, 1, 10, b"r1")
    w.new_connection(2, session_present=True)
    w.new_connection(3, session_present=True)
    assert receive(w, 3, 10, b"r1", dup=True) is h


def test_a_redelivery_of_an_acknowledged_message_is_recognised() -> None:
    """Its PUBACK was written but the broker never read it (the connection dropped first)."""
    w = AckWindow()
    w.new_connection(1, False)
    h = receive(w, 1, 10, b"r1")
    h.release()
    assert mids(w.ready()) == [10]  # acknowledged...
    w.new_connection(2, session_present=True)
    assert receive(w, 2, 10, b"r1", dup=True) is h  # ...yet sent again: not appended twice
    assert mids(w.ready()) == [10]


def test_acknowledged_deliveries_are_forgotten_without_a_session() -> None:
    w = AckWindow()
    w.new_connection(1, False)
    h = receive(w, 1, 10, b"r1")
    h.release()
    w.ready()
    w.new_connection(2, session_present=False)  # the broker lost the session: ids start over
    assert receive(w, 2, 10, b"r1", dup=True) is not h


def test_the_newest_delivery_of_an_id_is_the_one_matched() -> None:
    w = AckWindow()
    w.new_connection(1, False)
    a = receive(w, 1, 10, b"first")
    a.release()
    w.ready()  # id 10 acknowledged, then reused by the broker for another message
    receive(w, 1, 10, b"second")
    w.new_connection(2, session_present=True)
    assert receive(w, 2, 10, b"first", dup=True) is not a  # id 10 now means "second"
    w2 = AckWindow()
    w2.new_connection(1, False)
    a = receive(w2, 1, 10, b"first")
    a.release()
    w2.ready()
    b = receive(w2, 1, 10, b"second")
    w2.new_connection(2, session_present=True)
    assert receive(w2, 2, 10, b"second", dup=True) is b


def test_held_payload_is_released_once_appended() -> None:
    h = held(1)
    h.release()
    assert h.done and h.value == b"" and h.headers == []
