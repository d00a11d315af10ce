"""bench/request_calls.py counts the supervisor's calls per request, in a process importing the
tree measured; on the rings a caught-up consumer's standing fetch is answered by
StandingFetches.push, with no request or parked fetch made per answer (Python's path: the C data
plane switched off), and with the C data plane on, by the plane's C call (no push, no
produce_fields per message in Python); on the socket, with the plane on, a PRODUCE runs no
handler in Python either."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import request_calls
from edgebus.server.listeners import shm_plane
from edgebus.shm import unavailable_reason

pytestmark = pytest.mark.unit

HERE = Path(request_calls.__file__).resolve().parent.parent


@pytest.mark.skipif(unavailable_reason() is not None,
                    reason=f"shared memory unavailable: {unavailable_reason()}")
def test_standing_answer_is_pushed_in_place() -> None:
    got = request_calls.count_in(HERE, "shm", "produce+answer", 50, 200,
                                 env={"EDGEBUS_SHM_C_PLANE": "0"})
    calls = dict(got["top"])
    assert calls.get("standing.py:push") == 1.0  # once per append, answering it
    assert calls.get("data.py:produce_fields") == 1.0
    # No dataclass made per answer (a successor FetchRequest, FetchPartition, ParkedFetch),
    # no re-park, no read of the batch back.
    for name in ("<string>:__init__", "fetchwait.py:park", "standing.py:arm", "data.py:read_fetch"):
        assert name not in calls, name
    assert 0 < got["py"] < 60


@pytest.mark.skipif(not shm_plane.available(), reason="the C data plane is not built here")
def test_with_the_c_plane_neither_produce_nor_push_runs_in_python() -> None:
    off = request_calls.count_in(HERE, "shm", "produce+answer", 50, 200,
                                 env={"EDGEBUS_SHM_C_PLANE": "0"})
    got = request_calls.count_in(HERE, "shm", "produce+answer", 50, 200)
    calls = dict(got["top"])
    # Only the first PRODUCE of the link goes through Python (it makes the grant).
    assert calls.get("standing.py:push", 0) <= 0.1, calls
    assert calls.get("data.py:produce_fields", 0) <= 0.1, calls
    assert got["py"] < off["py"], (got["py"], off["py"])


def test_produce_alone_calls_no_on_append() -> None:
    """Python's path (the socket's C plane off: EDGEBUS_SOCKET_C_PLANE=0)."""
    got = request_calls.count_in(HERE, "socket", "produce", 50, 200,
                                 env={"EDGEBUS_SOCKET_C_PLANE": "0"})
    calls = dict(got["top"])
    assert calls.get("data.py:produce_fields") == 1.0
    assert "data.py:on_append" not in calls  # nobody waits on the partition


@pytest.mark.skipif(not shm_plane.available(), reason="the C data plane is not built here")
def test_with_the_c_plane_a_socket_produce_runs_no_handler_in_python() -> None:
    """The socket's reads go through the plane's C call (listeners/sock_plane.py): only the
    first PRODUCE of the connection runs produce_fields (it makes the grant), and the rest no
    framing or dispatch in Python either."""
    off = request_calls.count_in(HERE, "socket", "produce", 50, 200,
                                 env={"EDGEBUS_SOCKET_C_PLANE": "0"})
    got = request_calls.count_in(HERE, "socket", "produce", 50, 200)
    calls = dict(got["top"])
    for name in ("data.py:produce_fields", "dispatch.py:dispatch_frame", "framing.py:next_request",
                 "data.py:on_append"):
        assert calls.get(name, 0) <= 0.1, (name, calls)
    assert got["py"] < off["py"], (got["py"], off["py"])
