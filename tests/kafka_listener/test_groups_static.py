"""Static membership with real librdkafka processes (edgebus/server/groups/static.py): a member
with a `group.instance.id` that is SIGKILLed and started again within its session takes its
partitions back, and the other member sees no rebalance at all (same generation, no new
assignment)."""

from __future__ import annotations

import os
import signal

import pytest

from edgebus import Admin
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic
from tests.kafka_listener.test_groups_confluent import wait_for
from tests.kafka_listener.test_groups_leader import _Child

STATIC = r"""
import json, sys
from confluent_kafka import Consumer
conf = {"bootstrap.servers": sys.argv[1], "group.id": "static", "auto.offset.reset": "earliest",
        "session.timeout.ms": 60000, "heartbeat.interval.ms": 200}
if sys.argv[2]:
    conf["group.instance.id"] = sys.argv[2]
c = Consumer(conf)
def assigned(consumer, parts):
    print(json.dumps({"held": sorted(tp.partition for tp in parts)}), flush=True)
c.subscribe(["t"], on_assign=assigned)
while True:
    c.poll(0.1)
"""


@pytest.mark.crash
def test_a_static_member_restarted_after_sigkill_takes_its_partitions_back(
        kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "t", partitions=4)
    a = _Child(kbroker, STATIC, "kettle-a")
    b = _Child(kbroker, STATIC, "kettle-b")
    procs = [a, b]
    try:
        def split() -> bool:
            ha, hb = a.held(), b.held()
            return ha is not None and hb is not None and len(ha) == 2 and len(hb) == 2 \
                and set(ha) | set(hb) == {0, 1, 2, 3}
        wait_for(split, "two static members to split four partitions")
        mine, seen_b = a.held(), len(b.seen)
        with Admin(socket=kbroker.socket) as adm:
            before = adm.describe_group("static")
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait()
        again = _Child(kbroker, STATIC, "kettle-a")
        procs.append(again)
        wait_for(lambda: again.held() is not None, "the restarted process's assignment")
        assert again.held() == mine
        with Admin(socket=kbroker.socket) as adm:
            after = adm.describe_group("static")
        assert after.generation == before.generation and after.state == "Stable"
        assert len(after.members) == 2
        assert len(b.seen) == seen_b  # b was never reassigned
    finally:
        for c in procs:
            if c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait()
