"""What a read's later answers are owed when a callback raises a BaseException (KeyboardInterrupt,
SystemExit) while an earlier one is settled (edgebus/client/fast_acks.py deliver, in Python and
in C: edgebus/onestep.c deliver): each answer read is still settled, once, in order; the
exception is raised after; no future is left without its outcome; in_flight is right, so flush()
can end; and on the socket, the bytes after the last whole frame (a frame's start) stay the
stream's, so the next read does not start inside a frame.

Before: the walk ended at the raise. On the rings the rest of the read (already out of the ring)
was lost: its requests waited for good; on the socket, the same, and a frame's start read with
them was dropped (the next read began inside a frame). The C reap (sock_reap) already handed its
rest on (tests/client/test_settle_outcomes.py); it runs here too, over both walks.

The socket's cases run against a scripted supervisor (test_socket_reap_c.py's `peer`: a real
Unix socket whose far end the test writes byte for byte); the rings' against a real supervisor,
each answer waited for in the response ring before the next request, so that one reap takes them
all while the channel's reader sleeps unsignalled.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from edgebus import Admin
from edgebus import batch as B
from edgebus import format as F
from edgebus.client import fast_acks, lazy_acks, shm_channel, socket_acks
from edgebus.client.one_send import one_send_class
from edgebus.client.shm_channel import ShmAsyncChannel, open_async_channel
from edgebus.errors import ProtocolError
from edgebus.protocol import messages as M
from edgebus.testing import wait_for

from .test_socket_reap_c import REAPS, _expected, _normal, _Owner, _Stream, peer  # noqa: F401

# The bulk walk a channel's intake calls (fast_acks.deliver): the Python one, and the C one when
# built and on (EDGEBUS_PRODUCER_C_SEND; it hands the Python one what it does not take).
WALKS: dict[str, Any] = {"python": fast_acks.py_deliver}
if fast_acks.deliver is not fast_acks.py_deliver:
    WALKS["c"] = fast_acks.deliver


class Stop(BaseException):
    pass


def _boom(*_a: Any) -> None:
    raise Stop()


@pytest.fixture(params=sorted(WALKS), ids=lambda w: f"{w}-walk")
def walk(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """The bulk walk both channels' intakes use in this test."""
    monkeypatch.setattr(socket_acks, "deliver_acks", WALKS[request.param])
    monkeypatch.setattr(shm_channel, "deliver_acks", WALKS[request.param])
    return str(request.param)


# The socket's read: one-step sends answered "ok" or with an error code, another request's answer,
# and the start of one more "ok" answer, whose rest comes in the next read.
KINDS = ["ok", "ok", "error", "ok", "other", "ok", "ok"]


@pytest.mark.parametrize("reap", REAPS, ids=lambda r: f"{r}-reap")
@pytest.mark.parametrize("raiser", [0, 2, 4, 6], ids=lambda i: f"{KINDS[i]}{i}")
def test_on_the_socket_every_answer_of_the_read_is_settled_and_the_raise_comes_after(
        peer: Any, reap: str, walk: str, raiser: int) -> None:  # noqa: F811
    """raiser: whose callback raises: 0, a group that an error answer's settling follows; 2, the
    error answer's; 4, another request's; 6, the read's last group, a frame's start after it."""
    ch, far = peer
    take = ch.reap if reap == "c" else ch._py_reap
    owner = _Owner()
    s = _Stream(ch, owner)
    made = [s.one_send(k) if k != "other" else s.other() for k in KINDS]
    last_corr, last = s.one_send("ok")
    corr = made[raiser][0]
    cb = ch._pending[corr]
    if KINDS[raiser] == "other":
        def raising(frame: Any, err: Any) -> None:
            cb(frame, err)
            _boom()
        ch._pending[corr] = raising
    else:
        cb.add_callback(_boom)  # after the one that notes its outcome
    cut = len(last) // 2  # past the frame's header: the walk must keep it for the next read
    far.sendall(b"".join(f for _c, f in made) + last[:cut])
    with pytest.raises(Stop):
        take(force=True)
    assert _normal(s.out) == _expected([(c, k) for (c, _f), k in zip(made, KINDS, strict=True)])
    assert list(ch._pending) == [last_corr]  # the one whose answer has yet to come whole
    far.sendall(last[cut:])
    take(force=True)
    assert _normal(s.out)[-1] == (last_corr, last_corr * 10)  # read from its frame's start
    assert len(s.out) == len(KINDS) + 1
    assert ch._pending == {} and ch._proto.frames.buffered() == 0
    assert owner._in_flight == 0 and not owner._sent  # flush() can end
    n_ok = KINDS.count("ok") + 1
    assert owner._counts == {"record-send-total": n_ok, "batch-send-total": n_ok}
    assert ch._deferred is None and ch.lost is None  # the stream is whole: nothing ended it


def _in_epoll_wait(tid: int | None) -> bool:
    """Whether the thread is blocked in epoll_wait (the kernel's word for where it sleeps)."""
    with open(f"/proc/self/task/{tid}/wchan") as f:
        return "epoll" in f.read()


# The rings' reap: the same kinds (offsets 1, 2, -, 3, 4 (the other), 5: 0 was the first answer).
RING_KINDS = ["ok", "ok", "error", "ok", "other", "ok"]


def _produce(partition: int) -> M.ProduceRequest:
    return M.ProduceRequest("t", partition, 1,
                            B.build_batch([B.encode_record(0, None, b"v", [])], 0, 0))


@pytest.mark.integration
@pytest.mark.parametrize("raiser", [0, 2, 4, 5], ids=lambda i: f"{RING_KINDS[i]}{i}")
def test_on_the_rings_every_answer_of_the_reap_is_settled_and_the_raise_comes_after(
        broker: Any, walk: str, raiser: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lazy_acks, "ACK_UNASKED_S", 60.0)  # no timer takes them before the reap
    # only_when_asked() from the start: the reader's every wait is unsignalled. (Called after
    # the reader started, its first wait could be a signalled one, and the supervisor's wake-up
    # for that answer, if the answer was found by spinning, would end the next, unsignalled,
    # wait at once: the reader took an answer meant for the reap.)
    init = ShmAsyncChannel._init_lazy_acks

    def init_unasked(self: ShmAsyncChannel) -> None:
        init(self)
        self.only_when_asked()
    monkeypatch.setattr(ShmAsyncChannel, "_init_lazy_acks", init_unasked)
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic("t", 1)
    ch = open_async_channel(broker.socket, "shm", 1 << 20)
    assert isinstance(ch, ShmAsyncChannel)
    try:
        # Blocked in that wait (its epoll), not only about to: a wake-up already pending (one the
        # supervisor gave before the wait began) would end the wait at once.
        wait_for(lambda: ch._lazy_wait and _in_epoll_wait(ch._reader.native_id), 10,
                 "the reader blocked in its unsignalled wait", interval=0.005)
        ring = ch._rings.resp
        got = threading.Event()
        ch.send(M.Api.PRODUCE, _produce(0), lambda frame, err: got.set())
        wait_for(lambda: ring.used() > 0, 10, "the first answer in the ring", interval=0.002)
        ch.reap(force=True)
        assert got.is_set()  # taken by the reap, not by the reader
        owner = _Owner()
        cls = one_send_class(owner, "t", 0, 30.0)
        out: list[tuple[str, object]] = []

        def note_other(frame: Any, err: Any) -> None:
            out.append(("other", frame.error_code))

        def raising_other(frame: Any, err: Any) -> None:
            note_other(frame, err)
            _boom()

        def request(kind: str) -> None:
            """A request whose answer is `kind`; its callback raises if it is the raiser."""
            raises = len(out_kinds) == raiser
            out_kinds.append(kind)
            cb: Any
            if kind == "other":  # another request's answer (a plain callback): the Python walk's
                cb = raising_other if raises else note_other
            else:
                cb = cls()
                cb.size, cb.first_ts, cb.deadline = F.BATCH_HEADER_SIZE + 30, 0, 1e12
                cb.add_callback(lambda r: out.append(
                    ("one", "error" if r.error is not None else r.base_offset)))
                if raises:
                    cb.add_callback(_boom)
                owner._sent[id(cb)] = cb
                owner._in_flight += 1
            before = ring.used()
            # partition 7, which "t" lacks: an error answer
            ch.send(M.Api.PRODUCE, _produce(7 if kind == "error" else 0), cb)
            # Its answer whole in the ring (frames are published whole) before the next request
            wait_for(lambda: ring.used() > before, 10, f"the answer to {kind}", interval=0.002)

        out_kinds: list[str] = []
        for kind in RING_KINDS:
            request(kind)
        with pytest.raises(Stop):
            ch.reap(force=True)
        assert out == [("one", 1), ("one", 2), ("one", "error"), ("one", 3), ("other", 0),
                       ("one", 5)]
        assert ch._pending == {}
        assert owner._in_flight == 0 and not owner._sent  # flush() can end
        assert owner._counts == {"record-send-total": 4, "batch-send-total": 4}
        assert ch._deferred is None and ch.lost is None
        # The channel goes on: the next answer comes from the ring's next frame.
        request("ok")
        ch.reap(force=True)
        assert out[-1] == ("one", 6) and len(out) == len(RING_KINDS) + 1
    finally:
        ch.close()



@pytest.mark.parametrize("reap", REAPS, ids=lambda r: f"{r}-reap")
def test_a_broken_frame_after_a_raising_callback_ends_the_connection(
        peer: Any, reap: str, walk: str) -> None:  # noqa: F811
    """A callback's BaseException is raised after the read is settled, and a broken frame read
    with it (here: a length shorter than a header) is still the connection's end, as it is
    without the callback (the reap's except: `_deferred`, which the reader ends the channel
    with). Before (568e913), both reaps dropped the ProtocolError: the C reap cleared it
    (onestep_reap.c), the Python walk logged it at DEBUG (fast_acks.py_deliver); the channel
    went on reading a stream it could no longer split into frames."""
    ch, far = peer
    take = ch.reap if reap == "c" else ch._py_reap
    owner = _Owner()
    s = _Stream(ch, owner)
    corr, ok = s.one_send("ok")
    ch._pending[corr].add_callback(_boom)
    waiting, _ = s.one_send("ok")  # its answer never comes: the connection's end fails it
    far.sendall(ok + F.RESPONSE_HEADER.pack(2, 999, 0))
    with pytest.raises(Stop):
        take(force=True)
    assert isinstance(ch._deferred, ProtocolError), ch._deferred
    wait_for(lambda: ch.lost is not None, 10, "the reader to end the connection")
    assert isinstance(ch.lost, ProtocolError), ch.lost
    assert [c for c, _v in s.out] == [corr, waiting]  # each settled once, in order
    assert s.out[0] == (corr, corr * 10) and isinstance(s.out[1][1], str)  # failed
    assert ch._pending == {}
