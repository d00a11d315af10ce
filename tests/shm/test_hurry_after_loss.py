"""hurry() after a lost shared-memory connection: a nudge must never land on a closed eventfd
number that the process has reused (fixed in ShmAsyncChannel and Producer._ensure_channel).
Moved from tests/review/test_review_hotpaths.py; both tests failed before that fix.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable

import pytest

from edgebus import batch as B
from edgebus.client import lazy_acks
from edgebus.client.admin import Admin
from edgebus.client.shm_channel import ShmAsyncChannel, open_async_channel
from edgebus.protocol import messages as M
from edgebus.testing import EmbeddedBroker, wait_for
from tests.held import abandon


def _topic(b: EmbeddedBroker, name: str = "t", partitions: int = 1) -> None:
    with Admin(socket=b.socket, transport="socket") as a:
        a.create_topic(name, partitions)


def _readable(fd: int, timeout: float = 0.2) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def _written_into_reused(efd: int, action: Callable[[], object]) -> bytes:
    """What `action` writes into descriptor number `efd` (a closed eventfd's) once something
    else of the process has it: here a pipe's write end, as an application's file would."""
    r, w = os.pipe()
    try:
        os.dup2(w, efd)
        action()
        return os.read(r, 64) if _readable(r) else b""
    finally:
        os.close(efd)
        os.close(r)
        os.close(w)


def _lazy_for_long(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the reader's next wait after an acknowledgement an unsignalled (lazy) one that lasts
    seconds. A reader counts as sending steadily, and so waits lazily, only if it looks within
    STEADY_S (20 ms) of the last send: under load it can look later, wait signalled instead, and
    the test would check a case that never happened."""
    monkeypatch.setattr(lazy_acks, "ACK_LAZY_S", 5.0)
    monkeypatch.setattr(lazy_acks, "STEADY_S", 30.0)


# --- 1. hurry() after the reader left a lazy wait by an exception writes into a reused fd -------
@pytest.mark.integration
def test_hurry_after_the_channel_closed_in_a_lazy_wait_writes_nothing(broker, monkeypatch):
    """Was a bug: ShmAsyncChannel._read_loop set _lazy_wait = True and only cleared it when link.read()
    returns. When the supervisor goes away (or close() shuts the socket) during the lazy wait,
    link.read raises BrokerUnavailableError and _lazy_wait stays True for ever. After close()
    has closed the link's eventfds, any hurry() (Producer._hurry from fut.get()/flush(): the
    producer keeps the dead channel in _channel when reconnecting fails) does
    os.eventfd_write(<closed fd number>, 1): 8 bytes written into whatever file, pipe or socket
    now has that number."""
    _lazy_for_long(monkeypatch)
    _topic(broker)
    ch = open_async_channel(broker.socket, "shm", 1 << 20)
    assert isinstance(ch, ShmAsyncChannel)
    got = []
    data = B.build_batch([B.encode_record(0, None, b"v", [])], 0, 0)
    ch.send(M.Api.PRODUCE, M.ProduceRequest("t", 0, 1, data), lambda f, e: got.append((f, e)))
    wait_for(lambda: got, 30, "the produce's acknowledgement", interval=0.001)
    wait_for(lambda: ch._lazy_wait, 30, "the reader in its unsignalled (lazy) wait",
             interval=0.001)
    efd = ch._rings.efd_data
    ch.close()  # shutdown -> EOF seen in the lazy wait -> read() raises
    assert not ch._reader.is_alive()
    # e.g. Producer._hurry from a future's get() while reconnecting fails
    leaked = _written_into_reused(efd, ch.hurry)
    assert leaked == b"", f"hurry() on a closed channel wrote {leaked!r} into an unrelated fd"


@pytest.mark.integration
def test_future_get_after_supervisor_loss_writes_nothing_to_a_reused_fd(broker, monkeypatch):
    """Was the same bug through the public API: the supervisor dies while the producer's
    reader is in a lazy wait; the next send finds the channel lost, closes it (its eventfds) and
    fails to reconnect, so Producer._channel still names the closed channel. A later
    future.get() calls Producer._hurry -> closed_channel.hurry() -> eventfd_write on the closed
    efd_data number, corrupting whatever the application opened there meanwhile."""
    from edgebus.client.producer import Producer
    from edgebus.errors import EdgebusError

    _lazy_for_long(monkeypatch)
    _topic(broker)
    p = Producer(socket=broker.socket, transport="shm", linger_ms=0, delivery_timeout_ms=60_000)
    try:
        acked = []
        p.send("t", b"a", partition=0).add_callback(acked.append)
        wait_for(lambda: acked, 30, "the first record's acknowledgement", interval=0.001)
        ch = p._channel
        assert isinstance(ch, ShmAsyncChannel)
        wait_for(lambda: ch._lazy_wait, 30, "the reader in its unsignalled (lazy) wait",
                 interval=0.001)
        efd = ch._rings.efd_data
        broker.kill9()
        ch._reader.join(5)
        fut = p.send("t", b"b", partition=0)  # inline: channel lost -> closed -> reconnect fails
        wait_for(lambda: p._channel is not ch and ch._rings.closed, 30,
                 "the dead channel dropped and its rings closed")
        def get() -> None:
            with pytest.raises(EdgebusError):
                fut.get(0.3)

        leaked = _written_into_reused(efd, get)
        assert leaked == b"", f"future.get() wrote {leaked!r} into an unrelated fd"
    finally:
        abandon(p)
