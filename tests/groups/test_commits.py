"""Committed offsets through the public API, against a real supervisor process."""

from __future__ import annotations

import threading
import time

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.client.group import OffsetAndMetadata
from edgebus.errors import (
    BrokerUnavailableError,
    IllegalGenerationError,
    InvalidTopicError,
    UnknownMemberError,
)
from edgebus.protocol import groups as G
from edgebus.protocol import messages as M
from tests.groups.conftest import owners, wait_for

pytestmark = pytest.mark.integration
FAST = {"session_timeout_ms": 1000, "heartbeat_interval_ms": 100, "metadata_max_age_ms": 200}


def produce(socket: str, topic: str, per_partition: dict[int, int]) -> None:
    with Producer(socket=socket, acks="durable") as p:
        for part, n in per_partition.items():
            for i in range(n):
                p.send(topic, f"{part}:{i}".encode(), partition=part)
        p.flush(30)


# The waits below are for a rebalance, a commit or a record that comes in well under a second
# unloaded; 30 s (not 5-10 s) bounds a loaded machine, where the fault they guard is "never".
def poll_until(c: Consumer, n: int, timeout: float = 30) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=100, max_records=n - len(got)).values():
            got.extend(recs)
    assert len(got) == n, f"got {len(got)} of {n} records"
    return got


def test_commit_sync_async_committed_and_reset(broker, admin: Admin) -> None:
    admin.create_topic("c", partitions=2)
    produce(broker.socket, "c", {0: 10, 1: 10})
    tp0, tp1 = TopicPartition("c", 0), TopicPartition("c", 1)
    # Nothing committed: "latest" starts at the end, "earliest" at the start.
    with Consumer("c", group_id="late", socket=broker.socket, auto_offset_reset="latest",
                  enable_auto_commit=False, **FAST) as late:
        assert late.poll(300) == {}
        assert late.position(tp0) == 10 and late.committed(tp0) is None
    c = Consumer("c", group_id="g", socket=broker.socket, auto_offset_reset="earliest",
                 enable_auto_commit=False, **FAST)
    poll_until(c, 20)
    c.commit({tp0: OffsetAndMetadata(4, "four"), tp1: 7})
    assert c.committed(tp0) == 4 and c.committed(tp1) == 7
    assert c._group.committed_metadata(tp0) == OffsetAndMetadata(4, "four")
    done = threading.Event()
    seen = []
    fut = c.commit_async({tp0: 6}, callback=lambda offsets, err: (seen.append((offsets, err)),
                                                                   done.set()))
    fut.result(10)
    c.poll(0)  # callbacks run on the application thread, during poll()
    assert seen == [({tp0: OffsetAndMetadata(6)}, None)] and done.is_set()
    c.commit()  # positions: everything read
    assert (c.committed(tp0), c.committed(tp1)) == (10, 10)
    c.close()
    # A new member resumes exactly there.
    produce(broker.socket, "c", {0: 2})
    with Consumer("c", group_id="g", socket=broker.socket, enable_auto_commit=False, **FAST) as c2:
        got = poll_until(c2, 2)
        assert [(r.partition, r.offset) for r in got] == [(0, 10), (0, 11)]
    offsets = admin.list_group_offsets("g")
    assert offsets[tp0].offset == 10 and offsets[tp0].commit_time > 0


def test_auto_commit_and_close(broker, admin: Admin) -> None:
    admin.create_topic("auto", partitions=1)
    produce(broker.socket, "auto", {0: 5})
    tp = TopicPartition("auto", 0)
    c = Consumer("auto", group_id="ac", socket=broker.socket, auto_offset_reset="earliest",
                 auto_commit_interval_ms=100, **FAST)
    poll_until(c, 5)
    wait_for(lambda: (c.poll(50), c.committed(tp) == 5)[1], 30, "the auto-commit")
    produce(broker.socket, "auto", {0: 3})
    poll_until(c, 3)
    c.close()  # commits on close
    assert admin.list_group_offsets("ac")[tp].offset == 8


def test_stale_generation_gets_a_clear_error(broker, admin: Admin, members) -> None:
    admin.create_topic("s", partitions=2)
    c1 = Consumer("s", group_id="sg", socket=broker.socket, enable_auto_commit=False,
                  max_poll_interval_ms=1500, **FAST)
    c1.poll(200)
    first = (c1._group.member_id, c1._group.generation)
    assert first[1] >= 1
    other = members("other", "s", "sg", session_timeout_ms=1000, heartbeat_interval_ms=100)
    # c1 learns of the rebalance at a heartbeat and rejoins at its next poll.
    wait_for(lambda: (c1.poll(50), c1._group.generation > first[1])[1], 10, "c1 to rejoin")
    wait_for(lambda: len(owners(admin, "sg")) == 2, 10, "two members")
    stale = G.OffsetCommitRequest("sg", first[1], first[0], [G.OffsetCommitPartition("s", 0, 1)])
    with pytest.raises(IllegalGenerationError, match=rf"generation {first[1]} of group sg is stale"):
        admin.request(M.Api.OFFSET_COMMIT, stale)
    current = G.OffsetCommitRequest("sg", c1._group.generation, first[0],
                                    [G.OffsetCommitPartition("s", 0, 1)])
    admin.request(M.Api.OFFSET_COMMIT, current)
    # Through the API: c1 stops polling past max_poll_interval_ms, loses its membership, and
    # its commit is refused rather than applied to partitions that moved on.
    time.sleep(2.2)
    wait_for(lambda: list(owners(admin, "sg")) == [other.pid], 30, "c1 to be out of the group")
    with pytest.raises((IllegalGenerationError, UnknownMemberError)):
        c1.commit({TopicPartition("s", 0): 1})
    c1.poll(300)  # and it comes back
    wait_for(lambda: (c1.poll(50), len(owners(admin, "sg")) == 2)[1], 10, "c1 to rejoin")
    c1.close()
    assert other.finish() == 0


def test_pattern_subscription_follows_new_topics(broker, admin: Admin) -> None:
    assigned: list[list[TopicPartition]] = []

    class Listener:
        def on_partitions_assigned(self, tps):  # kafka-python's name works too
            assigned.append(sorted(tps))

    c = Consumer(group_id="pat", socket=broker.socket, auto_offset_reset="earliest", **FAST)
    c.subscribe(pattern=r"sensor-.*", listener=Listener())
    c.poll(100)
    admin.create_topic("sensor-a", partitions=2)
    admin.create_topic("other", partitions=1)
    wait_for(lambda: (c.poll(50), len(c.assignment()) == 2)[1], 30, "sensor-a to be assigned")
    admin.create_topic("sensor-b", partitions=1)
    produce(broker.socket, "sensor-b", {0: 1})
    got = wait_for(lambda: c.poll(100), 30, "a record of sensor-b")
    assert list(got) == [TopicPartition("sensor-b", 0)]
    assert c.assignment() == {TopicPartition("sensor-a", 0), TopicPartition("sensor-a", 1),
                              TopicPartition("sensor-b", 0)}
    assert assigned[-1] == sorted(c.assignment())
    c.close()


def test_internal_topic_is_hidden_and_protected(broker, admin: Admin) -> None:
    assert admin.list_topics() == []
    meta = admin.describe_topic("__consumer_offsets")
    assert len(meta.partitions) == 1
    with Producer(socket=broker.socket) as p, pytest.raises(InvalidTopicError):
        p.send("__consumer_offsets", b"x", partition=0).get(10)
    with pytest.raises(InvalidTopicError):
        admin.delete_topic("__consumer_offsets")


@pytest.mark.crash
def test_committed_offsets_survive_supervisor_sigkill(broker, admin: Admin) -> None:
    admin.create_topic("d", partitions=2)
    produce(broker.socket, "d", {0: 50, 1: 50})
    c = Consumer("d", group_id="dg", socket=broker.socket, auto_offset_reset="earliest",
                 enable_auto_commit=False, **FAST)
    poll_until(c, 60)
    c.commit()  # answered only after the fsync
    before = {tp: (o.offset, o.commit_time) for tp, o in admin.list_group_offsets("dg").items()}
    assert sum(o for o, _ in before.values()) == 60
    c.commit({TopicPartition("d", 0): OffsetAndMetadata(before[TopicPartition("d", 0)][0],
                                                        "checkpoint-7")})
    admin.close()
    broker.kill9()
    broker.start()
    with Admin(socket=broker.socket) as a2:
        after = a2.list_group_offsets("dg")
        assert {tp: o.offset for tp, o in after.items()} == {tp: o for tp, (o, _) in before.items()}
        assert after[TopicPartition("d", 0)].metadata == "checkpoint-7"
        assert after[TopicPartition("d", 1)].commit_time == before[TopicPartition("d", 1)][1]
    # The same consumer carries on after the restart: it rejoins and resumes at its commits.
    rest: list = []
    deadline = time.monotonic() + 15
    while len(rest) < 40 and time.monotonic() < deadline:
        try:
            for recs in c.poll(timeout_ms=100).values():
                rest.extend(recs)
        except BrokerUnavailableError:
            time.sleep(0.05)
    got = sorted((r.partition, r.offset) for r in rest)
    expect = sorted((tp.partition, o) for tp, (start, _) in before.items() for o in range(start, 50))
    assert got == expect
    c.close()


def test_deleted_and_recreated_topic_under_a_subscription(broker, admin: Admin) -> None:
    admin.create_topic("keep", partitions=1)
    admin.create_topic("gone", partitions=2)
    produce(broker.socket, "gone", {0: 3, 1: 3})
    c = Consumer("keep", "gone", group_id="del", socket=broker.socket,
                 auto_offset_reset="earliest", **FAST)
    poll_until(c, 6)
    c.commit()
    assert admin.list_group_offsets("del")[TopicPartition("gone", 0)].offset == 3
    admin.delete_topic("gone")
    wait_for(lambda: (c.poll(50), c.assignment() == {TopicPartition("keep", 0)})[1], 30,
             "the deleted topic to leave the assignment")
    assert TopicPartition("gone", 0) not in admin.list_group_offsets("del")
    admin.create_topic("gone", partitions=2)  # a new topic of the same name starts from scratch
    produce(broker.socket, "gone", {1: 1})
    got = wait_for(lambda: c.poll(100), 30, "the new topic's record")
    assert [(tp, [r.offset for r in recs]) for tp, recs in got.items()] == \
        [(TopicPartition("gone", 1), [0])]
    c.close()


def test_slow_processing_does_not_cost_the_membership(broker, admin: Admin) -> None:
    admin.create_topic("slow", partitions=1)
    produce(broker.socket, "slow", {0: 3})
    c = Consumer("slow", group_id="sl", socket=broker.socket, auto_offset_reset="earliest",
                 enable_auto_commit=False, **FAST)
    poll_until(c, 3)
    member, generation = c._group.member_id, c._group.generation
    time.sleep(2.5)  # 2.5 sessions without a poll(): the heartbeat thread keeps the member alive
    d = admin.describe_group("sl")
    assert (d.state, d.generation, [m.member_id for m in d.members]) == ("Stable", generation, [member])
    c.commit()  # the generation is still good
    assert c.committed(TopicPartition("slow", 0)) == 3
    c.close()
