"""A replica link's errors name the peer's address and what to check there, never the local
supervisor's socket (edgebus/client/replica_errors.py). The usual mistakes, against real
processes: the link pointed at the peer's Kafka listener (which closes the connection at the
replica handshake: before, "the supervisor closed the connection (hint: is `edgebus serve`
running? set EDGEBUS_SOCKET ...)"), at a port where nothing listens, and a peer killed in the
middle of a session; and the replicator's own log line for the first."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebus import Admin
from edgebus.client.replica import ReplicaLink
from edgebus.client.replica_errors import ReplicaProtocolError, ReplicaTimeoutError
from edgebus.errors import OperationTimeoutError, ProtocolError, TargetUnavailableError
from edgebus.testing import EmbeddedBroker, free_port

from .conftest import NODE, TOKEN, PeerDestination, Replicators, secret, wait_for

pytestmark = pytest.mark.integration

LOCAL_HINT = "EDGEBUS_SOCKET"  # the local supervisor's hint: wrong for a peer


def test_the_peers_kafka_port_instead_of_its_replica_listener(make_broker) -> None:
    peer = make_broker(name="peer").start()
    address = peer.kafka_bootstrap
    with pytest.raises(TargetUnavailableError) as e:
        ReplicaLink(address, NODE, TOKEN, timeout=5)
    text = str(e.value)
    assert address in text and "REPLICA_HELLO" in text, text
    assert "replica.listen" in text and "Kafka listener" in text, text
    assert LOCAL_HINT not in text and "the supervisor closed" not in text, text


def test_nothing_listening_at_the_address() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(TargetUnavailableError) as e:
        ReplicaLink(address, NODE, TOKEN, timeout=5)
    text = str(e.value)
    assert f"cannot connect to the replica listener at {address}: connection refused" in text
    assert "replica.listen" in text and LOCAL_HINT not in text, text


def test_a_peer_killed_mid_session_is_named_with_its_node(make_broker, tmp_path: Path) -> None:
    dest = PeerDestination(make_broker, tmp_path)
    link = ReplicaLink(dest.address, NODE, TOKEN, timeout=5)
    assert link.describe("nothing") is None  # the link is up
    dest.kill9()
    with pytest.raises(TargetUnavailableError) as e:
        link.describe("nothing")
    text = str(e.value)
    assert f"the replica listener at {dest.address} (node gw-dst)" in text, text
    assert LOCAL_HINT not in text and "the supervisor closed" not in text, text
    link.close()


def test_the_timeout_and_protocol_errors_stay_what_callers_catch() -> None:
    # sessions.half_open catches OperationTimeoutError; a stream out of step is a ProtocolError.
    assert issubclass(ReplicaTimeoutError, OperationTimeoutError)
    assert issubclass(ReplicaTimeoutError, TargetUnavailableError)
    assert issubclass(ReplicaProtocolError, ProtocolError)


def test_the_replicator_logs_the_wrong_address_with_what_to_check(
        make_broker, source: EmbeddedBroker, replicators: Replicators, tmp_path: Path) -> None:
    peer = make_broker(name="peer").start()
    with Admin(socket=source.socket) as a:
        a.create_topic("t", 1)
    rep = replicators.make({"node": NODE, "source": {"socket": source.socket}, "links": [{
        "name": "l1", "target": "peer", "address": peer.kafka_bootstrap, "topics": ["t"],
        "token_file": str(secret(tmp_path / "tok", TOKEN)), "heartbeat_s": 1}]}).start()
    wait_for(lambda: "REPLICA_HELLO" in rep.log(), what=f"the link's error:\n{rep.log()[-2000:]}")
    line = next(ln for ln in rep.log().splitlines() if "REPLICA_HELLO" in ln)
    assert peer.kafka_bootstrap in line and "replica.listen" in line, line
    assert LOCAL_HINT not in line, line
