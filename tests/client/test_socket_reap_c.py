"""A sending thread's intake of the socket's acknowledgements (LazySocketChannel.reap), in C
(edgebus/onestep_reap.c sock_reap) and in Python (`_py_reap`), against a scripted supervisor: a real
Unix socket whose far end this test writes byte for byte, and a real LazySocketChannel with its
reader thread in its unsignalled wait. Whatever a read's cut, every answer reaches its request
once, in the stream's order: one-step sends settled by the C walk, error answers and other
requests' answers handed to the Python walk, a frame's start kept for the next read; more than
one read's worth is taken over several reaps; the end of the stream fails what is in flight."""

from __future__ import annotations

import socket
import threading
from collections import deque
from pathlib import Path

import pytest

from edgebus import format as F
from edgebus.client import fast_acks, lazy_acks
from edgebus.client.fast_send import _FastSend
from edgebus.client.one_send import one_send_class
from edgebus.client.socket_acks import LazySocketChannel
from edgebus.errors import BrokerUnavailableError, EdgebusError
from edgebus.testing import wait_for

REAPS = ["python"] + (["c"] if fast_acks.C_REAP is not None else [])
TOPIC = "t"


def _frame(corr: int, err: int, body: bytes) -> bytes:
    return F.RESPONSE_HEADER.pack(F.RESPONSE_MIN_LENGTH + len(body), corr, err) + body


def _produce_answer(corr: int, base: int) -> bytes:
    t = TOPIC.encode()
    return _frame(corr, 0, F.STR_LENGTH.pack(len(t)) + t
                  + F.PRODUCE_RESPONSE_RUN.pack(0, base, 1_000 + base, 0))


class _Owner(_FastSend):
    """The producer state a one-step send's settling reads and writes (Producer's names)."""

    def __init__(self) -> None:
        self._mutex = threading.RLock()
        self._cond = threading.Condition(self._mutex)
        self._results_lock = threading.Lock()
        self._in_flight = 0
        self._queued_bytes = 0
        self._sent: dict = {}
        self._counts = {"record-send-total": 0, "batch-send-total": 0}
        self._drain_held = False
        self._blocked = self._flushing = 0
        self._closed = False
        self._ready: deque = deque()
        self._open: dict = {}
        self.max_in_flight = 10_000
        self._timed_acks = True

    def _finish(self, b, base, ts, err) -> None:  # type: ignore[no-untyped-def]
        self._sent.pop(id(b), None)
        self._in_flight -= 1
        if err is None:  # as Producer._finish counts them
            self._counts["record-send-total"] += 1
            self._counts["batch-send-total"] += 1
        b.done(base, ts, err)


@pytest.fixture
def peer(tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    """(channel, the supervisor's end of its socket), the channel's reader in its unsignalled
    wait (no timer that could take the bytes before the test's reap)."""
    monkeypatch.setattr(lazy_acks, "ACK_UNASKED_S", 60.0)
    path = tmp_path / "s.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    ch = LazySocketChannel(path)
    far, _ = srv.accept()
    srv.close()
    ch.only_when_asked()
    # The reader blocked in recv() before only_when_asked: one answer ends that wait.
    got = threading.Event()
    with ch._lock:
        ch._pending[1] = lambda frame, err: got.set()
    far.sendall(_frame(1, 0, b""))
    assert got.wait(10)
    wait_for(lambda: ch._lazy_wait, 10, "the reader in its unsignalled wait", interval=0.005)
    try:
        yield ch, far
    finally:
        far.close()
        ch.close()


class _Stream:
    """Requests in flight on the channel, each answered in the scripted bytes, and what their
    outcomes were, in the order they came: (corr, base offset or error name)."""

    def __init__(self, ch: LazySocketChannel, owner: _Owner) -> None:
        self.ch, self.owner, self.out = ch, owner, []
        self.cls = one_send_class(owner, TOPIC, 0, 30.0)
        self.next = 100

    def one_send(self, answer: str) -> tuple[int, bytes]:
        """A one-step send whose answer is `answer`: "ok" or "error"."""
        corr = self.next = self.next + 1
        b = self.cls()
        b.size, b.first_ts, b.deadline = F.BATCH_HEADER_SIZE + 30, 0, 1e12
        b.add_callback(lambda r, c=corr: self.out.append(
            (c, type(r.error).__name__ if r.error else r.base_offset)))
        self.owner._sent[id(b)] = b
        self.owner._in_flight += 1
        with self.ch._lock:
            self.ch._pending[corr] = b
        if answer == "ok":
            return corr, _produce_answer(corr, corr * 10)
        return corr, _frame(corr, 3, b"")  # an error code: the typed error, via the Python walk

    def other(self) -> tuple[int, bytes]:
        """Another request's answer (a plain callback): the Python walk's."""
        corr = self.next = self.next + 1

        def cb(frame, err, c=corr) -> None:  # type: ignore[no-untyped-def]
            assert err is None
            self.out.append((c, bytes(frame.body)))
        with self.ch._lock:
            self.ch._pending[corr] = cb
        return corr, _frame(corr, 0, b"other%d" % corr)


def _expected(corrs_kinds: list[tuple[int, str]]) -> list[tuple[int, object]]:
    out: list[tuple[int, object]] = []
    for corr, kind in corrs_kinds:
        if kind == "ok":
            out.append((corr, corr * 10))
        elif kind == "error":
            out.append((corr, "x"))
        else:
            out.append((corr, b"other%d" % corr))
    return out


def _normal(out: list) -> list:
    return [(c, "x" if isinstance(v, str) else v) for c, v in out]


@pytest.mark.parametrize("reap", REAPS)
def test_every_cut_of_a_mixed_stream_settles_each_answer_once_in_order(peer, reap) -> None:
    ch, far = peer
    take = ch.reap if reap == "c" else ch._py_reap
    if reap == "c":
        assert take.__func__ is fast_acks.C_REAP  # type: ignore[attr-defined]
    kinds = ["ok", "ok", "other", "ok", "error", "ok", "ok", "other", "other", "ok"]
    owner = _Owner()
    s = _Stream(ch, owner)
    probe = b"".join(_produce_answer(1, 1) if k == "ok" else _frame(1, 3, b"") if k == "error"
                     else _frame(1, 0, b"other%d" % 1) for k in kinds)
    for cut in range(len(probe) + 1):
        s.out.clear()
        made = [(s.one_send(k) if k != "other" else s.other()) for k in kinds]
        data = b"".join(frame for _c, frame in made)
        far.sendall(data[:cut])
        take(force=True)
        far.sendall(data[cut:])
        take(force=True)
        want = _expected([(c, k) for (c, _f), k in zip(made, kinds, strict=True)])
        assert _normal(s.out) == want, cut
        assert ch._pending == {} and ch._proto.frames.buffered() == 0
    assert owner._in_flight == 0 and owner._sent == {}
    n_ok = kinds.count("ok") * (len(probe) + 1)
    assert owner._counts == {"record-send-total": n_ok, "batch-send-total": n_ok}
    assert ch._deferred is None and ch.lost is None


@pytest.mark.parametrize("reap", REAPS)
def test_more_than_one_reads_worth_is_taken_over_several_reaps(peer, reap) -> None:
    ch, far = peer
    take = ch.reap if reap == "c" else ch._py_reap
    owner = _Owner()
    s = _Stream(ch, owner)
    made = [s.one_send("ok") for _ in range(3000)]  # ~170 KB of answers: over the C reap's 64 KiB
    data = b"".join(f for _c, f in made)
    writer = threading.Thread(target=far.sendall, args=(data,))
    writer.start()
    for _ in range(10_000):
        take(force=True)
        if len(s.out) == len(made):
            break
    writer.join(10)
    assert s.out == [(c, c * 10) for c, _f in made]
    assert owner._in_flight == 0 and ch._pending == {}


@pytest.mark.parametrize("reap", REAPS)
def test_the_end_of_the_stream_fails_what_is_in_flight(peer, reap) -> None:
    """An answer, then the supervisor's end closed: the answer settles its send; the reap
    leaves the end to the reader (_deferred, nudged), which fails the other request."""
    ch, far = peer
    take = ch.reap if reap == "c" else ch._py_reap
    owner = _Owner()
    s = _Stream(ch, owner)
    (c1, f1), (c2, _f2) = s.one_send("ok"), s.one_send("ok")
    far.sendall(f1)
    far.shutdown(socket.SHUT_WR)
    # The answer, then the end: taken by these reaps or by the reader (the hang-up also ends
    # its wait), whichever comes first; the outcomes are the same.
    take(force=True)
    take(force=True)
    wait_for(lambda: len(s.out) == 2, 10, "both outcomes", interval=0.01)
    assert s.out == [(c1, c1 * 10), (c2, "BrokerUnavailableError")]
    assert isinstance(ch.lost, BrokerUnavailableError)
    assert isinstance(ch.lost, EdgebusError)

