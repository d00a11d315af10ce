"""What one turn of the loop runs besides the callbacks (issue 16): a periodic timer
(Service.timer_static) is asked for its deadline after its tick or a deadline_changed() only,
the loop waits in epoll itself (edgebus/server/poller.py) with the selectors API its parts use,
and an answer on a connection with nothing to re-arm does not call update_interest."""

from __future__ import annotations

import os
import selectors
import socket
import time

import pytest

from edgebus.protocol import messages as M
from edgebus.server.listeners.stream import Connection
from edgebus.server.loop import Loop
from edgebus.server.poller import Poller, mask
from edgebus.server.service import LoopApi, Service
from tests.server.test_loop_services import connect

pytestmark = pytest.mark.unit


class Periodic(Service):
    """A periodic timer that counts how often the loop asks for its deadline."""

    timer_static = True

    def __init__(self, period: float, stop: LoopApi | None = None) -> None:
        self.period, self.due, self.asked, self.ticks = period, time.monotonic() + period, 0, 0
        self.stop = stop  # stopped at the first tick

    def next_deadline(self) -> float | None:
        self.asked += 1
        return self.due

    def tick(self, now: float) -> None:
        self.ticks += 1
        self.due = now + self.period
        if self.stop is not None:  # the loop sees it after its next wait: make that short
            self.stop.stopping = True
            self.due = now


class Busy(Service):
    """Keeps the loop turning for `turns` turns (a pipe left readable), then stops it."""

    def __init__(self, api: LoopApi, turns: int) -> None:
        self.api, self.turns, self.polls = api, turns, 0
        self.r, self.w = os.pipe()
        os.write(self.w, b"x")  # never read: every epoll wait returns at once
        api.register(self.r, self._ready)

    def _ready(self, m: int) -> None:
        self.polls += 1
        if self.polls >= self.turns:
            self.api.stopping = True

    def close(self) -> None:
        self.api.unregister(self.r)
        os.close(self.r)
        os.close(self.w)


def test_a_periodic_timer_is_asked_after_its_ticks_not_every_turn(loop: Loop) -> None:
    periodic, busy = Periodic(3600.0), Busy(loop, 500)
    loop.add(periodic)
    loop.add(busy)
    loop.run()
    busy.close()
    assert busy.polls == 500
    assert periodic.ticks == 0 and periodic.asked == 1  # once when added, not per turn


def test_a_periodic_timer_still_ticks_on_time(loop: Loop) -> None:
    periodic = Periodic(0.002)

    class Stop(Service):
        def poll(self, idle: bool) -> bool:
            if periodic.ticks >= 5:
                loop.stopping = True
            return False

    loop.add(periodic)
    loop.add(Stop())
    loop.run()  # sleeps in epoll until each deadline: would hang if a tick's new time were lost
    assert periodic.ticks == 5


def test_deadline_changed_makes_the_loop_ask_again(loop: Loop) -> None:
    """A static timer moved earlier outside its tick (a refused connection's lingering): the
    loop would sleep forever on the old deadline without the call."""
    periodic = Periodic(3600.0, stop=loop)
    loop.add(periodic)
    r, w = os.pipe()

    def on_pipe(m: int) -> None:
        os.read(r, 16)
        periodic.due = time.monotonic()
        loop.deadline_changed()

    loop.register(r, on_pipe)
    os.write(w, b"x")
    loop.run()
    assert periodic.ticks == 1
    loop.unregister(r)
    for fd in (r, w):
        os.close(fd)


def test_a_subclass_with_its_own_timer_is_asked_every_turn(loop: Loop) -> None:
    class Own(Periodic):
        def next_deadline(self) -> float | None:  # its own timer, not said static here
            self.asked += 1
            return self.due

    own, busy = Own(3600.0), Busy(loop, 50)
    loop.add(own)
    loop.add(busy)
    loop.run()
    busy.close()
    assert own.asked >= 50


def test_poller_keeps_the_selectors_api_the_parts_use() -> None:
    p = Poller()
    a, b = socket.socketpair()
    try:
        calls: list[int] = []
        p.register(a, selectors.EVENT_READ, calls.append)
        with pytest.raises(KeyError):
            p.register(a, selectors.EVENT_READ, calls.append)
        with pytest.raises(ValueError, match="invalid events"):
            p.modify(a, 8, calls.append)
        b.send(b"x")
        ready = p.ep.poll(1.0)
        assert [(fd, mask(ev)) for fd, ev in ready] == [(a.fileno(), selectors.EVENT_READ)]
        p.modify(a, selectors.EVENT_WRITE, calls.append)
        assert [mask(ev) for _, ev in p.ep.poll(1.0)] == [selectors.EVENT_WRITE]
        p.modify(a, 0, calls.append)  # watched for nothing, still registered
        assert p.ep.poll(0) == []
        a.close()
        p.unregister(a)  # closed first: found by the object, as selectors does
        with pytest.raises(KeyError):
            p.unregister(a)
        with pytest.raises(KeyError):
            p.modify(b, selectors.EVENT_READ, calls.append)
    finally:
        a.close()
        b.close()
        p.close()


def test_a_hang_up_reports_read_and_write_as_selectors_does(loop: Loop) -> None:
    a, b = socket.socketpair()
    got: list[int] = []
    loop.register(a, got.append)

    class Stop(Service):
        def poll(self, idle: bool) -> bool:
            loop.stopping = bool(got)
            return False

    loop.add(Stop())
    b.close()
    loop.run()
    assert got and got[0] & selectors.EVENT_READ  # the callback reads and finds EOF
    loop.unregister(a)
    a.close()


def test_an_answer_rearms_only_when_something_changed(loop: Loop, monkeypatch) -> None:
    conn, peer = connect(loop)
    ours = conn.sock
    rearmed: list[int] = []
    original = Connection.update_interest

    def spy(self: Connection) -> None:
        rearmed.append(1)
        original(self)

    monkeypatch.setattr(Connection, "update_interest", spy)
    loop.answer(conn, 1, M.MetadataResponse([]))  # sent whole: nothing to re-arm
    assert rearmed == []
    conn.max_output = 0  # a tiny bound: the next answer that queues output overloads it
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = M.MetadataResponse([])
    while not conn.out:
        loop.answer(conn, 2, big)
    assert rearmed and conn.overloaded and conn.events == selectors.EVENT_WRITE
    loop.close(conn)
    peer.close()


def test_a_service_is_polled_only_while_it_asked(loop: Loop) -> None:
    class OnDemand(Service):
        polls_when_asked = True

        def __init__(self) -> None:
            self.polls = 0

        def poll(self, idle: bool) -> bool:
            self.polls += 1
            if self.polls == 3:
                loop.want_poll(self, False)  # done: not polled again, even this turn's list
            return True

    od, busy = OnDemand(), Busy(loop, 100)
    loop.add(od)
    loop.add(busy)
    loop.want_poll(od, True)
    loop.want_poll(od, True)  # asking twice is asking once
    loop.run()
    busy.close()
    assert busy.polls == 100 and od.polls == 3
