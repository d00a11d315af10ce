"""Parked fetches' deadlines on the loop's static timer (issue 16): the loop no longer asks the
fetch waiters for their next deadline on every turn, only after a tick or when a park moves it
earlier (FetchWaiters.park -> LoopApi.deadline_changed). A real supervisor; a standing fetch
re-armed by every append must not hide a short wait parked beside it."""

from __future__ import annotations

import types

import pytest

from edgebus import Admin, Producer
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol
from edgebus.server.fetchwait import FetchWaiters, ParkedFetch
from tests.server.rawclient import raw, read_frames, req

# Periodic flushes, checkpoints and disk checks far apart: no other timer's tick makes the loop
# ask the waiters again meanwhile.
_QUIET_TIMERS = {"log": {"flush_interval_ms": 60_000, "checkpoint_interval_ms": 60_000},
                 "disk": {"check_interval_ms": 60_000}}


@pytest.mark.integration
def test_a_short_wait_expires_on_time_beside_a_rearmed_standing_fetch(make_broker):
    """A standing fetch (30 s wait) answered and re-armed on every append, and a FETCH with a
    300 ms wait on a quiet topic parked meanwhile: the FETCH is answered (empty) at its wait, not
    when the loop next happens to ask (the standing fetch's 30 s, or the next periodic timer).
    Fails when a park earlier than the loop's deadline does not tell the loop."""
    b = make_broker(_QUIET_TIMERS).start()
    with Admin(socket=b.socket) as a:
        a.create_topic("fdl_busy", 1)
        a.create_topic("fdl_quiet", 1)
    standing = raw(b)
    quiet = raw(b)
    try:
        standing.sendall(req(M.Api.FETCH_STANDING, 7, M.FetchRequest(
            30_000, 1, 1 << 20, [M.FetchPartition("fdl_busy", 0, 0, 1 << 20)])))
        with Producer(socket=b.socket, linger_ms=0) as p:

            def append_and_read(n: int) -> None:
                for _ in range(n):
                    p.send("fdl_busy", b"x", partition=0).get(10)
                    (frame,) = read_frames(standing, 10, want=1)  # read: re-armed, not held
                    assert frame.correlation_id == 7 and frame.error_code == 0

            append_and_read(20)
            for corr in (100, 101, 102):
                quiet.sendall(req(M.Api.FETCH, corr, M.FetchRequest(
                    300, 1, 4096, [M.FetchPartition("fdl_quiet", 0, 0, 4096)])))
                append_and_read(5)  # the standing fetch keeps being re-armed meanwhile
                # 20 s: far past the 300 ms wait (a loaded supervisor may answer seconds late),
                # and 10 s before the standing fetch's 30 s, re-armed just above
                frames = read_frames(quiet, 20, want=1)
                assert [f.correlation_id for f in frames] == [corr], \
                    "the short wait was not answered when it ran out"
                resp = ClientProtocol.decode_body(M.Api.FETCH, frames[0])
                assert resp.partitions[0].records == b"", "answered by data, not by its wait"
    finally:
        standing.close()
        quiet.close()


def test_rearmed_waiters_do_not_pile_up_in_the_deadline_heap():
    """With no next_deadline() per loop turn to pop them, answered fetches would stay in the
    heap until their deadline: one per message for a standing fetch's whole wait."""
    told: list[int] = []
    w = FetchWaiters(lambda: told.append(1))
    conn = types.SimpleNamespace(parked=0)
    request = M.FetchRequest(30_000, 1, 4096, [M.FetchPartition("t", 0, 0, 4096)])
    for i in range(10_000):
        f = ParkedFetch(conn, 1, request, 1000.0 + i)
        w.park(f)
        w.remove(f)
    assert len(w._deadlines) <= 130
    assert len(told) == 1  # only the first park moved the deadline earlier than the loop's
    assert w.next_deadline() is None
    w.park(ParkedFetch(conn, 2, request, 5.0))
    assert len(told) == 2 and w.next_deadline() == 5.0
