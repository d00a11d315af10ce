"""aiokafka beyond produce and consume (test_clients.py, test_groups_pyclients.py): a rebalance
between two real aiokafka processes, one of them SIGKILLed, and its admin client's calls,
checked against what the native Admin sees of the same log."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.testing import EmbeddedBroker, PipeLines
from tests.kafka_listener.conftest import create_topic

pytestmark = pytest.mark.integration

WAIT_S = 60  # upper bound on waiting for a group to settle (never a speed assertion)

CHILD = r"""
import asyncio, json, sys
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

class Show(ConsumerRebalanceListener):
    async def on_partitions_revoked(self, revoked):
        pass
    async def on_partitions_assigned(self, assigned):
        print(json.dumps({"held": sorted(tp.partition for tp in assigned)}), flush=True)

async def main():
    c = AIOKafkaConsumer(bootstrap_servers=sys.argv[1], group_id=sys.argv[2],
                         auto_offset_reset="earliest", enable_auto_commit=False,
                         session_timeout_ms=60000, heartbeat_interval_ms=200)
    await c.start()
    c.subscribe([sys.argv[3]], listener=Show())
    seen = 0
    while True:
        got = await c.getmany(timeout_ms=100)
        n = sum(len(v) for v in got.values())
        if n:
            seen += n
            await c.commit()
            print(json.dumps({"read": seen}), flush=True)

asyncio.run(main())
"""


class Child:
    def __init__(self, broker: EmbeddedBroker, group: str, topic: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, broker.kafka_bootstrap, group,
                                      topic], stdout=subprocess.PIPE, env=os.environ.copy())
        assert self.proc.stdout is not None
        self.pipe = PipeLines(self.proc.stdout)
        self.lines: list[dict[str, Any]] = []

    def held(self) -> list[int] | None:
        self.lines += [json.loads(line) for line in self.pipe.read()]
        helds = [x["held"] for x in self.lines if "held" in x]
        return helds[-1] if helds else None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_for(cond: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_rebalance_between_two_aiokafka_processes_and_a_kill(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "t", partitions=4)
    with Producer(socket=kbroker.socket) as p:
        for i in range(40):
            p.send("t", b"v%d" % i, partition=i % 4)
        p.flush()
    a, b = Child(kbroker, "aio2", "t"), Child(kbroker, "aio2", "t")
    try:
        def split() -> bool:
            ha, hb = a.held(), b.held()
            return ha is not None and hb is not None and len(ha) == len(hb) == 2 \
                and set(ha) | set(hb) == {0, 1, 2, 3}

        wait_for(split, "two aiokafka processes to split four partitions")
        os.kill(a.proc.pid, signal.SIGKILL)  # no LeaveGroup: the closed connection removes it
        a.proc.wait()
        wait_for(lambda: b.held() == [0, 1, 2, 3], "the survivor to take every partition")

        def all_committed() -> bool:
            with Admin(socket=kbroker.socket) as adm:
                offs = {tp.partition: o.offset for tp, o in adm.list_group_offsets("aio2").items()}
            return offs == {0: 10, 1: 10, 2: 10, 3: 10}

        wait_for(all_committed, "the survivor's commits of every partition")
    finally:
        a.kill()
        b.kill()


def test_aiokafka_admin(kbroker: EmbeddedBroker) -> None:
    """Topics (create, a second create refused, list, delete), configs by Kafka's names,
    partitions grown, records deleted, and a group's views, through AIOKafkaAdminClient."""
    from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from aiokafka.admin.records_to_delete import RecordsToDelete
    from aiokafka.structs import TopicPartition as ATP

    native: dict[str, Any] = {}

    async def run() -> dict[str, Any]:
        ac = AIOKafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap)
        await ac.start()
        out: dict[str, Any] = {}
        try:
            await ac.create_topics([NewTopic("adm", 2, 1, topic_configs={"retention.ms": "60000"})])
            # aiokafka hands back the answer (it raises on none of its codes).
            again = await ac.create_topics([NewTopic("adm", 2, 1)])
            out["again"] = [t[1] for t in again.topic_errors]
            out["topics"] = sorted(await ac.list_topics())
            res = await ac.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "adm")])
            out["configs"] = {c[0]: c[1] for r in res for t in r.resources for c in t[4]}
            await ac.create_partitions({"adm": NewPartitions(3)})
            with Producer(socket=kbroker.socket) as p:
                for i in range(10):
                    p.send("adm", b"v%d" % i, partition=0)
                p.flush()
            await ac.delete_records({ATP("adm", 0): RecordsToDelete(before_offset=4)})
            with Admin(socket=kbroker.socket) as a:
                t = a.describe_topic("adm")
                native["partitions"] = len(t.partitions)
                native["log_start"] = t.partitions[0].log_start_offset
            with Consumer(socket=kbroker.socket, group_id="aio-adm") as c:  # a native group
                c.assign([TopicPartition("adm", 0)])
                c.commit({TopicPartition("adm", 0): 7})
            out["groups"] = [g[0] for g in await ac.list_consumer_groups()]
            offs = await ac.list_consumer_group_offsets("aio-adm")
            out["offsets"] = {(tp.topic, tp.partition): m.offset for tp, m in offs.items()}
            out["described"] = await ac.describe_consumer_groups(["aio-adm"])
            await ac.delete_topics(["adm"])
            out["after"] = sorted(await ac.list_topics())
        finally:
            await ac.close()
        return out

    out = asyncio.run(asyncio.wait_for(run(), WAIT_S))
    assert out["again"] == [36]  # TOPIC_ALREADY_EXISTS
    assert "adm" in out["topics"]
    assert out["configs"]["retention.ms"] == "60000"
    assert native == {"partitions": 3, "log_start": 4}
    assert "aio-adm" in out["groups"] and out["offsets"] == {("adm", 0): 7}
    assert out["described"]
    assert "adm" not in out["after"]
