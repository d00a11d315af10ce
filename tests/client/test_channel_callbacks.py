"""The pending-request dispatcher (edgebus/client/dispatch.py) on every transport: a raising
callback is logged and ends nothing, and on loss every request in flight gets exactly one outcome.

Was a bug: the shared-memory reader called callbacks unguarded, so one raising callback ended
its thread and left the channel dead (later requests never answered, the pending ones failed).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pytest

from edgebus import Admin
from edgebus import batch as B
from edgebus.client.shm_channel import ShmAsyncChannel, open_async_channel
from edgebus.errors import BrokerUnavailableError
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ResponseFrame

pytestmark = pytest.mark.integration

TRANSPORTS = ["shm", "socket"]


def _produce() -> M.ProduceRequest:
    return M.ProduceRequest("t", 0, 1, B.build_batch([B.encode_record(0, None, b"v", [])], 0, 0))


def _channel(broker, transport: str, on_lost=None):
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic("t", 1)
    ch = open_async_channel(broker.socket, transport, 1 << 20, on_lost=on_lost)
    assert isinstance(ch, ShmAsyncChannel) == (transport == "shm")
    return ch


class Outcomes:
    """Callbacks that record what they were called with, and an event per expected count."""

    def __init__(self) -> None:
        self.got: list[tuple[ResponseFrame | None, BaseException | None]] = []
        self.cond = threading.Condition()

    def __call__(self, frame: ResponseFrame | None, err: BaseException | None) -> None:
        with self.cond:
            self.got.append((frame, err))
            self.cond.notify_all()

    def wait(self, n: int, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.got) >= n, timeout)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_raising_callback_is_logged_and_the_channel_keeps_answering(broker, transport, caplog):
    ch = _channel(broker, transport)
    raised = threading.Event()

    def bad(frame, err):
        raised.set()
        raise RuntimeError("a callback's bug")

    try:
        with caplog.at_level(logging.ERROR, logger="edgebus.channel"):
            ch.send(M.Api.PRODUCE, _produce(), bad)
            assert raised.wait(10)
            ok = Outcomes()
            for _ in range(20):
                ch.send(M.Api.PRODUCE, _produce(), ok)
            assert ok.wait(20), f"later requests unanswered ({len(ok.got)} of 20)"
        assert all(f is not None and e is None and not f.error_code for f, e in ok.got)
        assert ch.lost is None and ch.in_flight == 0
        assert "a response callback failed" in caplog.text and "a callback's bug" in caplog.text
    finally:
        ch.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_on_loss_every_request_in_flight_fails_once_even_past_a_raising_callback(
        broker, transport):
    lost: list[BaseException] = []
    ch = _channel(broker, transport, on_lost=lost.append)
    outcomes = Outcomes()
    first_fail = threading.Event()

    def bad(frame, err):
        outcomes(frame, err)
        if err is not None:
            first_fail.set()
            raise RuntimeError("a callback's bug during the loss")

    try:
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)  # it reads nothing, answers nothing
        sent = 10
        for i in range(sent):
            ch.send(M.Api.PRODUCE, _produce(), bad if i % 3 == 0 else outcomes)
        assert ch.in_flight == sent
        broker.kill9()  # SIGKILL ends a stopped process too
        deadline = time.monotonic() + 10
        while ch.lost is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert isinstance(ch.lost, BrokerUnavailableError)
        assert outcomes.wait(sent), f"{len(outcomes.got)} of {sent} requests got an outcome"
        assert first_fail.is_set()
        time.sleep(0.05)  # no second outcome may follow
        assert len(outcomes.got) == sent
        assert all(f is None and e is ch.lost for f, e in outcomes.got)
        assert lost == [ch.lost]  # on_lost once, with the error the requests got
        assert ch.in_flight == 0
        with pytest.raises(BrokerUnavailableError):
            ch.send(M.Api.PRODUCE, _produce(), outcomes)
    finally:
        ch.close()
