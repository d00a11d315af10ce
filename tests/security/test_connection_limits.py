"""One user cannot take every connection (issue 14 item 9): limits.max_connections_per_uid, with
a real second user. A refused client gets a typed error (TooManyConnectionsError, the refused
connection's only frame, correlation id 0) and the refusal is counted."""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from edgebus import Admin
from edgebus.errors import TooManyConnectionsError
from edgebus.protocol.framing import ClientProtocol
from tests.security.conftest import Users

pytestmark = pytest.mark.integration


def admin_when_room(sock: str, timeout: float = 30.0) -> Admin:
    """A connected Admin, retrying while the supervisor has not yet seen an earlier connection
    of this user close (closes reach it asynchronously: start()'s readiness probe, a close())."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Admin(socket=sock)  # connects (ApiVersions) at once
        except TooManyConnectionsError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_one_user_at_its_limit_leaves_room_for_others(users: Users, make_broker) -> None:
    other = users.add("ebcli")
    # The other user may create its topic (access control: docs/SECURITY.md).
    b = make_broker({"limits": {"max_connections_per_uid": 2}, "socket_mode": "0666",
                     "acl": {"rules": [f"allow user:{other.name} create topic:theirs"]}}).start()
    os.chmod(Path(b.socket).parent, 0o711)  # the other user may reach the socket
    held = [admin_when_room(b.socket) for _ in range(2)]
    try:
        # A third connection of this user: refused with the typed error...
        with pytest.raises(TooManyConnectionsError) as e:
            Admin(socket=b.socket).list_topics()
        assert "limits.max_connections_per_uid" in str(e.value) and e.value.retriable
        # ...which is the connection's only frame, correlation id 0, then end of stream.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(b.socket)
            s.settimeout(10)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        proto = ClientProtocol()
        proto.receive_data(data)
        frame = proto.next_response()
        assert frame is not None and proto.next_response() is None
        assert (frame.correlation_id, frame.error_code) == (0, TooManyConnectionsError.code)
        assert struct.unpack_from("<H", frame.body)[0] > 0  # an error message
        # Another user still gets in (the CLI, as that user).
        r = users.run(other, ["python", "-m", "edgebus.cli.main", "topics", "create", "theirs",
                              "--socket", b.socket])
        assert r.returncode == 0, r.stderr
        # The refusals are counted.
        lim = held[0].status()["limits"]
        assert lim["refused_connections"]["max_connections_per_uid"] >= 2
        # A connection of this user that closes frees its slot.
        held.pop().close()
        with admin_when_room(b.socket) as a:
            assert "theirs" in a.list_topics()
    finally:
        for a in held:
            a.close()


KAFKA_LIST_TOPICS = """
import sys
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
try:
    md = AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=float(sys.argv[2]))
except KafkaException as e:
    print("refused:", e)
else:
    print("topics:", ",".join(sorted(md.topics)))
"""


def kafka_list_topics(users: Users, user: Any, bootstrap: str, timeout: float) -> str:
    """A real Kafka client (confluent-kafka: librdkafka) as `user`: its answer, one line."""
    r = users.run(user, ["python", "-c", KAFKA_LIST_TOPICS, bootstrap, str(timeout)])
    assert r.returncode == 0, r.stderr
    return str(r.stdout.strip())


def test_loopback_kafka_clients_count_against_their_users_limit(users: Users, make_broker) -> None:
    """A Kafka client on loopback without SASL is the local user owning its end
    (/proc/net/tcp), for limits.max_connections_per_uid as for the access rules: at its user's
    limit it is refused, while another user's Kafka client gets in. (Every such client used to
    count as uid -1, a bucket of its own.)"""
    other = users.add("ebkafka")
    me = users.add("ebnative")  # the user at its limit: its native clients hold both slots
    b = make_broker({"limits": {"max_connections_per_uid": 2}, "socket_mode": "0666"}).start()
    os.chmod(Path(b.socket).parent, 0o711)  # the users may reach the socket
    code = ("import sys, time\nfrom edgebus import Admin\n"
            "held = [Admin(socket=sys.argv[1]) for _ in range(2)]\n"
            "[a.list_topics() for a in held]\nprint('held', flush=True)\ntime.sleep(120)\n")
    holder = users.popen(me, ["python", "-c", code, b.socket])
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with Admin(socket=b.socket) as watcher:  # root's own slot, to read the counter
            before = watcher.status()["limits"]["refused_connections"].get(
                "max_connections_per_uid", 0)
            # The same user's Kafka client: over its limit.
            got = kafka_list_topics(users, me, b.kafka_bootstrap, 5)
            assert got.startswith("refused:"), got
            after = watcher.status()["limits"]["refused_connections"]["max_connections_per_uid"]
            assert after > before
            assert f"uid {me.uid} has 2 connections" in b.log()
            # Another user's Kafka client: its own slots.
            assert kafka_list_topics(users, other, b.kafka_bootstrap, 30).startswith("topics:")
    finally:
        holder.kill()
        holder.wait()
