"""The HTTP pieces that need no socket: SSE positions, JSON records, the error mapping, and any
bytes sent to a real listener (the supervisor answers or closes, and keeps serving)."""

from __future__ import annotations

import random
import socket
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgebus import batch as B
from edgebus import errors as E
from edgebus.server.http import records as R
from edgebus.server.http.exchange import error_doc, status_of
from edgebus.server.http.sse import event_id, parse_last_event_id

from .conftest import Http


@pytest.mark.property
@settings(deadline=None)  # a loaded CI machine is slow, not wrong
@given(st.dictionaries(st.integers(0, 63), st.integers(-1, 2**40), min_size=1, max_size=8))
def test_an_event_id_resumes_after_what_it_names(last: dict[int, int]) -> None:
    parts = sorted(last)
    assert parse_last_event_id(event_id(last), parts) == {p: o + 1 for p, o in last.items()}


@pytest.mark.unit
@pytest.mark.parametrize("bad", ["", "x", "1:2:3", "0:1,9:1", "5", "0:-5"])
def test_a_foreign_last_event_id_is_refused(bad: str) -> None:
    with pytest.raises(E.InvalidRequestError):
        parse_last_event_id(bad, [0, 1])


@pytest.mark.property
@settings(deadline=None, max_examples=60)
@given(st.lists(st.tuples(st.one_of(st.none(), st.binary(max_size=20)),
                          st.one_of(st.none(), st.binary(max_size=50)),
                          st.lists(st.tuples(st.text(min_size=1, max_size=5),
                                             st.one_of(st.none(), st.binary(max_size=5))), max_size=3)),
                min_size=1, max_size=20))
def test_records_survive_json_both_ways(items: list[Any]) -> None:
    """What a produce body says is what the batch holds, and what an answer gives back."""
    import base64

    b64 = lambda b: None if b is None else base64.b64encode(b).decode()  # noqa: E731
    body = {"encoding": "base64", "records": [
        {"key": b64(k), "value": b64(v), "headers": [[hk, b64(hv)] for hk, hv in hs]} for k, v, hs in items]}
    batch = bytearray(R.build(R.parse_produce(body), 1000))
    B.stamp_batch(batch, 10, 1000)
    got = R.decode(bytes(batch), "t", 0, 10)
    assert [(r.key, r.value, r.headers) for r in got] == [(k, v, hs) for k, v, hs in items]
    for r in got:
        doc = R.record_doc(r)
        dec = (lambda s: None if s is None else base64.b64decode(s)) if doc["encoding"] == "base64" \
            else (lambda s: None if s is None else s.encode())
        assert (dec(doc["key"]), dec(doc["value"])) == (r.key, r.value)
        assert [(k, dec(v)) for k, v in doc["headers"]] == r.headers


@pytest.mark.unit
def test_every_wire_error_has_a_status_and_a_code() -> None:
    for cls in E._BY_CODE.values():  # type: ignore[attr-defined]
        e = cls("m")
        assert 400 <= status_of(e) < 600
        assert error_doc(e)["error"]["code"] == cls.code
    assert status_of(E.UnknownTopicError("x")) == 404 and status_of(E.DiskFullError("x")) == 507


@pytest.mark.integration
def test_random_bytes_never_hurt_the_listener(http_broker: Any) -> None:
    port = http_broker.http_port
    rng = random.Random(17)
    seeds = [b"GET / HTTP/1.1\r\n", b"POST /api/topics HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
             b"\x16\x03\x01\x02\x00", b"GET /api/topics/%ff%fe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"]
    for i in range(60):
        data = rng.choice(seeds) + bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
        if i % 3 == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
        with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(65536):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    api = Http(port)
    assert api.ok("GET", "/api/topics")["topics"]
    assert http_broker.proc.poll() is None and "Traceback" not in http_broker.log()
