"""Leader-assigned groups with real Kafka clients (edgebus/server/groups/leader.py): librdkafka's
cooperative-sticky assignor runs in the leader member; two processes split a topic, one is
SIGKILLed, the survivor takes everything (incrementally: it keeps what it had); and the classic
protocol byte by byte on a real supervisor (a follower's SyncGroup waits for the leader's)."""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from confluent_kafka.admin import AdminClient
from kio.schema.join_group.v9.request import JoinGroupRequestProtocol
from kio.schema.sync_group.v5.request import SyncGroupRequest, SyncGroupRequestAssignment

from edgebus import Admin, Consumer
from edgebus.errors import InconsistentGroupProtocolError
from edgebus.server.kafka.groups import MAX_MEMBER_METADATA
from edgebus.testing import EmbeddedBroker, PipeLines
from tests.kafka_listener.conftest import connect, create_topic, parse_response, raw_request, read_frame
from tests.kafka_listener.test_groups_confluent import wait_for
from tests.kafka_listener.test_groups_protocol import JOIN, SYNC, _request

CHILD = r"""
import json, sys
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "coop", "auto.offset.reset": "earliest",
              "partition.assignment.strategy": "cooperative-sticky",
              "session.timeout.ms": 60000, "heartbeat.interval.ms": 200})
held = set()
def show():
    print(json.dumps({"held": sorted(held)}), flush=True)
def assigned(consumer, parts):  # cooperative: only the partitions added
    held.update(tp.partition for tp in parts)
    show()
def revoked(consumer, parts):  # cooperative: only the partitions taken away
    held.difference_update(tp.partition for tp in parts)
    show()
c.subscribe(["t"], on_assign=assigned, on_revoke=revoked)
while True:
    c.poll(0.1)
"""


class _Child:
    """A consumer process; its lines read with PipeLines (never select() + readline())."""

    def __init__(self, broker: EmbeddedBroker, script: str = CHILD, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", script, broker.kafka_bootstrap, *args],
                                     stdout=subprocess.PIPE, env=os.environ.copy())
        self.pipe = PipeLines(self.proc.stdout)
        self.seen: list[dict[str, object]] = []

    def held(self) -> list[int] | None:
        self.seen += [json.loads(line) for line in self.pipe.read()]
        return list(self.seen[-1]["held"]) if self.seen else None  # type: ignore[call-overload]


@pytest.mark.crash
def test_cooperative_sticky_between_two_processes_and_a_kill(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "t", partitions=4)
    a = _Child(kbroker)
    try:
        wait_for(lambda: a.held() == [0, 1, 2, 3], "the first process to take all four")
        b = _Child(kbroker)
        try:
            def split() -> bool:
                ha, hb = a.held(), b.held()
                return ha is not None and hb is not None and len(ha) == 2 and len(hb) == 2 \
                    and set(ha) | set(hb) == {0, 1, 2, 3}
            wait_for(split, "two processes to split four partitions")
            # Incremental: the first process never gave up a partition it kept (no eager
            # revoke-everything step: the cooperative protocol, as the group's view says).
            kept = set(a.held() or [])
            assert all(kept <= set(s["held"]) for s in a.seen)  # type: ignore[arg-type]
            with Admin(socket=kbroker.socket) as adm:
                d = adm.describe_group("coop")
            assert d.assignor == "cooperative-sticky" and d.state == "Stable"
            assert sorted(p for m in d.members for t in m.assignment for p in t.partitions) \
                == [0, 1, 2, 3]
            # Kafka's view: the members' own bytes, which librdkafka's admin client decodes.
            ac = AdminClient({"bootstrap.servers": kbroker.kafka_bootstrap})  # kept while it answers
            kd = ac.describe_consumer_groups(["coop"])["coop"].result(15)
            assert kd.partition_assignor == "cooperative-sticky"
            assert sorted(tp.partition for m in kd.members
                          for tp in m.assignment.topic_partitions) == [0, 1, 2, 3]
            os.kill(a.proc.pid, signal.SIGKILL)  # no LeaveGroup: the closed connection removes it
            a.proc.wait()
            mine = set(b.held() or [])
            wait_for(lambda: b.held() == [0, 1, 2, 3], "the survivor to take every partition")
            assert all(mine <= set(s["held"]) for s in b.seen[-1:])  # type: ignore[arg-type]
            # A native consumer cannot join this group: a typed error naming the protocols.
            n = Consumer("t", group_id="coop", socket=kbroker.socket)
            try:
                with pytest.raises(InconsistentGroupProtocolError, match="cooperative-sticky"):
                    n.poll(100)
            finally:
                n.close()
        finally:
            if b.proc.poll() is None:
                b.proc.kill()
                b.proc.wait()
    finally:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()


def _join(s: socket.socket, corr: int, name: str, md: bytes, member_id: str = "") -> object:
    return _request(s, JOIN, 9, corr, group_id="lg", member_id=member_id, group_instance_id=None,
                    protocol_type="consumer", reason=None,
                    session_timeout=datetime.timedelta(milliseconds=10_000),
                    rebalance_timeout=datetime.timedelta(milliseconds=30_000),
                    protocols=(JoinGroupRequestProtocol(name=name, metadata=md),))


def _sync(member: str, gen: int, assignments: dict[str, bytes]) -> SyncGroupRequest:
    return SyncGroupRequest(
        group_id="lg", generation_id=gen, member_id=member, group_instance_id=None,
        protocol_type="consumer", protocol_name="own",
        assignments=tuple(SyncGroupRequestAssignment(member_id=m, assignment=b)  # type: ignore[arg-type]
                          for m, b in assignments.items()))


@pytest.mark.integration
def test_classic_protocol_bytes_pass_through(kbroker: EmbeddedBroker) -> None:
    from kio.schema.sync_group.v5.response import SyncGroupResponse

    with connect(kbroker) as s1, connect(kbroker) as s2:
        j1 = _join(s1, 1, "own", b"\xffnot the consumer protocol")
        assert (j1.error_code, j1.leader, j1.protocol_name) == (0, j1.member_id, "own")  # type: ignore[attr-defined]
        r = _call(s1, 2, _sync(j1.member_id, 1, {j1.member_id: b"a"}))  # type: ignore[attr-defined]
        assert (r.error_code, r.assignment, r.protocol_name) == (0, b"a", "own")
        # A second member: joins on s2 are parked until the leader rejoins.
        s2.sendall(raw_request(JOIN, 9, 3, _join_body("", b"second")))
        with Admin(socket=kbroker.socket) as adm:
            wait_for(lambda: adm.describe_group("lg").state == "PreparingRebalance",
                     "the second join to start a rebalance")
        j1b = _join(s1, 4, "own", b"first", member_id=j1.member_id)  # type: ignore[attr-defined]
        _, j2 = parse_response(read_frame(s2), type(j1b), flexible_header=True)
        assert j1b.leader == j1.member_id and j2.leader == j1.member_id  # type: ignore[attr-defined]
        assert sorted(bytes(m.metadata) for m in j1b.members) == [b"first", b"second"]  # type: ignore[attr-defined]
        assert j2.members == ()
        # The follower's SyncGroup is answered only after the leader's, with its bytes.
        s2.sendall(raw_request(SYNC, 5, 5, _sync(j2.member_id, 2, {})))
        r1 = _call(s1, 6, _sync(j1.member_id, 2, {  # type: ignore[attr-defined]
            j1.member_id: b"\x00one", j2.member_id: b"\x00two"}))  # type: ignore[attr-defined]
        _, r2 = parse_response(read_frame(s2), SyncGroupResponse, flexible_header=True)
        assert (r1.assignment, r2.assignment) == (b"\x00one", b"\x00two")
        # A member with a protocol in common with nobody: INCONSISTENT_GROUP_PROTOCOL; one
        # whose metadata is above the bound the coordinator keeps for a leader: INVALID_REQUEST.
        with connect(kbroker) as s3:
            assert _join(s3, 7, "range", b"").error_code == 23  # type: ignore[attr-defined]
            big = _join(s3, 8, "own", b"x" * (MAX_MEMBER_METADATA + 1))
            assert big.error_code == 42  # type: ignore[attr-defined]


def _call(s: socket.socket, corr: int, body: SyncGroupRequest) -> object:
    from kio.schema.sync_group.v5.response import SyncGroupResponse

    s.sendall(raw_request(SYNC, 5, corr, body))
    got, resp = parse_response(read_frame(s), SyncGroupResponse, flexible_header=True)
    assert got == corr
    return resp


def _join_body(member_id: str, md: bytes) -> object:
    from kio.schema.join_group.v9.request import JoinGroupRequest

    return JoinGroupRequest(group_id="lg", member_id=member_id, group_instance_id=None,
                            protocol_type="consumer", reason=None,
                            session_timeout=datetime.timedelta(milliseconds=10_000),
                            rebalance_timeout=datetime.timedelta(milliseconds=30_000),
                            protocols=(JoinGroupRequestProtocol(name="own", metadata=md),))


@pytest.mark.crash
def test_cooperative_sticky_across_librdkafka_and_kafka_python(kbroker: EmbeddedBroker) -> None:
    """Two client libraries in one leader-assigned group: whichever leads assigns for both (the
    same cooperative-sticky protocol, its metadata the consumer protocol's). The librdkafka
    process is SIGKILLed; the kafka-python consumer takes its partitions."""
    from kafka import KafkaConsumer
    from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor

    create_topic(kbroker, "t", partitions=4)
    child = _Child(kbroker)
    kp = KafkaConsumer(bootstrap_servers=kbroker.kafka_bootstrap, group_id="coop",
                       partition_assignment_strategy=[CooperativeStickyAssignor],
                       session_timeout_ms=60_000, heartbeat_interval_ms=200,
                       auto_offset_reset="earliest")
    try:
        wait_for(lambda: child.held() == [0, 1, 2, 3], "the librdkafka process to take all four")
        kp.subscribe(["t"])

        def mine() -> set[int]:
            kp.poll(timeout_ms=100)
            return {tp.partition for tp in kp.assignment()}

        def split() -> bool:
            km, ch = mine(), child.held()
            return len(km) == 2 and ch is not None and len(ch) == 2 and km | set(ch) == {0, 1, 2, 3}
        wait_for(split, "librdkafka and kafka-python to split four partitions")
        with Admin(socket=kbroker.socket) as adm:
            assert adm.describe_group("coop").assignor == "cooperative-sticky"
        os.kill(child.proc.pid, signal.SIGKILL)
        child.proc.wait()
        wait_for(lambda: mine() == {0, 1, 2, 3}, "kafka-python to take every partition")
    finally:
        kp.close()
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()
