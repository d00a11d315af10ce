"""The loop's contract with its parts (edgebus/server/service.py, docs/ARCHITECTURE.md "The
supervisor"), on a bare Loop with no Broker: services plug in through the hooks they override,
every answer goes out through `LoopApi.answer`, and a closed connection is reported once."""

from __future__ import annotations

import os
import socket
import time

import pytest

from edgebus.errors import UnknownTopicError
from edgebus.fastpath.supervisor import encode_response
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol
from edgebus.server.listeners.stream import Connection
from edgebus.server.loop import Loop
from edgebus.server.service import LoopApi, Service

pytestmark = pytest.mark.unit


def connect(loop: Loop) -> tuple[Connection, socket.socket]:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    conn = Connection(ours, loop)
    assert loop.adopt(conn) is None
    return conn, peer


class Ticker(Service):
    """A timer: due at once, three ticks, then it stops the loop."""

    def __init__(self, api: LoopApi) -> None:
        self.api, self.ticks, self.due = api, 0, time.monotonic()

    def next_deadline(self) -> float | None:
        return self.due

    def tick(self, now: float) -> None:
        self.ticks += 1
        self.due = now + 0.001
        if self.ticks == 3:
            self.api.stopping = True


class Watcher(Service):
    def __init__(self) -> None:
        self.closed: list[int] = []

    def connection_closed(self, conn: Connection) -> None:
        self.closed.append(conn.id)


class Poller(Service):
    def __init__(self) -> None:
        self.calls = 0

    def poll(self, idle: bool) -> bool:
        self.calls += 1
        return False


class Inert(Service):
    """Overrides nothing: the loop never calls it while it runs."""


def test_services_are_driven_through_the_hooks_they_override(loop: Loop, monkeypatch) -> None:
    called: list[str] = []
    for hook in ("next_deadline", "tick", "poll", "connection_closed"):
        original = getattr(Service, hook)

        def spy(self: Service, *args: object, _hook: str = hook, _orig: object = original) -> object:
            called.append(_hook)
            return _orig(self, *args)  # type: ignore[operator]

        monkeypatch.setattr(Service, hook, spy)
    ticker, watcher, poller = Ticker(loop), Watcher(), Poller()
    for s in (Inert(), ticker, watcher, poller):
        loop.add(s)
    r, w = os.pipe()
    fired: list[int] = []
    loop.register(r, fired.append)  # LoopApi.register: an fd with a callback
    os.write(w, b"x")
    conn, peer = connect(loop)
    loop.run()
    assert ticker.ticks == 3 and poller.calls >= 3
    assert fired  # the pipe's callback ran with its mask
    loop.close(conn)
    loop.close(conn)  # idempotent: watchers hear of it once
    assert watcher.closed == [conn.id]
    assert called == []  # Service's own hooks (the Inert one's) were never called
    loop.unregister(r)
    for fd in (r, w):
        os.close(fd)
    peer.close()


def test_every_kind_of_answer_goes_out_through_answer(loop: Loop) -> None:
    conn, peer = connect(loop)
    loop.answer(conn, 7, M.MetadataResponse([]))  # a message: encoded here
    loop.answer(conn, 8, UnknownTopicError("unknown topic 'x'"))  # an error: its error frame
    loop.answer(conn, 9, encode_response(9, M.MetadataResponse([])))  # a frame: queued as it is
    conn.flush()
    proto = ClientProtocol()
    proto.receive_data(peer.recv(1 << 16))
    answers = [proto.next_response() for _ in range(3)]
    assert [(a.correlation_id, a.error_code) for a in answers if a is not None] == [
        (7, 0), (8, UnknownTopicError.code), (9, 0)]
    for a in (answers[0], answers[2]):
        assert a is not None
        assert ClientProtocol.decode_body(int(M.Api.METADATA), a) == M.MetadataResponse([])
    loop.close(conn)
    loop.answer(conn, 10, M.MetadataResponse([]))  # a closed connection: nothing happens
    assert conn.out_bytes == 0
    peer.close()
