"""The decisions a connection keeps (issue 15's overhead fix: the PRODUCE fast path and FETCH read
the connection's cached "yes" without calling the Authorizer): a "yes" for one topic is never
taken for another, on either transport, for writes and reads alike."""

from __future__ import annotations

from typing import Any

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.errors import AuthorizationError

pytestmark = pytest.mark.integration

RULES = {"acl": {"rules": ["deny user:root write topic:secret",
                           "deny user:root read topic:secret"]}}


@pytest.mark.parametrize("transport", ["socket", "shm"])
def test_a_cached_yes_is_per_topic(make_broker: Any, transport: str) -> None:
    b = make_broker(RULES).start()
    with Admin(socket=b.socket) as admin:
        admin.create_topic("open")
        admin.create_topic("secret")
    p = Producer(socket=b.socket, transport=transport, linger_ms=0)
    try:
        for _ in range(3):  # the first decides and caches; the others are the cached path
            p.send("open", b"x", partition=0).get(10)
        with pytest.raises(AuthorizationError, match="user:root may not write topic 'secret'"):
            p.send("secret", b"x", partition=0).get(10)
        assert p.send("open", b"y", partition=0).get(10).offset == 3  # the same connection
        with pytest.raises(AuthorizationError, match="user:root may not write topic 'secret'"):
            p.send("secret", b"y", partition=0).get(10)  # a cached "no" is still a no
    finally:
        p.close()

    c = Consumer(socket=b.socket, transport=transport, auto_offset_reset="earliest",
                 enable_auto_commit=False)
    try:
        c.assign([TopicPartition("open", 0)])
        got: list[bytes] = []
        while len(got) < 4:
            for recs in c.poll(5000).values():
                got += [r.value for r in recs]
        assert got == [b"x", b"x", b"x", b"y"]
        c.assign([TopicPartition("open", 0), TopicPartition("secret", 0)])
        with pytest.raises(AuthorizationError, match="user:root may not read topic 'secret'"):
            for _ in range(20):  # a fetch that names the denied topic is refused whole
                c.poll(200)
    finally:
        c.close()
