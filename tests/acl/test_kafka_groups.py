"""Kafka's group and admin APIs under the same rules as the native ones (issue 15): a Kafka
client running as a second local user on loopback (principal = its uid, /proc/net/tcp) calls
each of them on a resource the rules allow and on one they do not; each refused item gets
Kafka's own code (29 topic, 30 group, 31 cluster) while the allowed items of the same request
proceed, the denials are counted by the one Authorizer, and the supervisor stays up. A native
Admin call and its Kafka equivalent by the same principal get the same decision."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from edgebus import Admin, Consumer, Producer
from tests.security.conftest import Users

pytestmark = pytest.mark.integration

pytest.importorskip("kafka", reason="kafka-python is one of the Kafka clients of this test")

TOPIC_DENIED, GROUP_DENIED, CLUSTER_DENIED = 29, 30, 31
INCONSISTENT_GROUP_PROTOCOL, UNKNOWN_MEMBER_ID = 23, 25
INVALID_PRODUCER_ID_MAPPING, OPERATION_NOT_ATTEMPTED = 49, 55

# case -> the codes of the answer's items (see tests/acl/kafka_group_admin_ops.py): the first
# item of each request is allowed by the rules, the second refused.
EXPECTED: dict[str, Any] = {
    "find_coordinator ok": [0], "find_coordinator no": [GROUP_DENIED],
    "join ok": [INCONSISTENT_GROUP_PROTOCOL], "join no": [GROUP_DENIED],
    "sync ok": [UNKNOWN_MEMBER_ID], "sync no": [GROUP_DENIED],
    "heartbeat ok": [UNKNOWN_MEMBER_ID], "heartbeat no": [GROUP_DENIED],
    "leave ok": [0], "leave no": [GROUP_DENIED],
    # group read, then read on each topic: the allowed topic's offset is committed
    "offset_commit ok": [0, TOPIC_DENIED],
    "offset_commit no": [GROUP_DENIED, GROUP_DENIED],
    "offset_fetch ok": [0], "offset_fetch no": [GROUP_DENIED],
    # transactions: what the rules allow reaches the coordinator (which knows no producer 7)
    "add_offsets_to_txn ok": [INVALID_PRODUCER_ID_MAPPING], "add_offsets_to_txn no": [GROUP_DENIED],
    "txn_offset_commit ok": [INVALID_PRODUCER_ID_MAPPING, TOPIC_DENIED],
    "txn_offset_commit no": [GROUP_DENIED, GROUP_DENIED],
    "add_partitions_to_txn": [OPERATION_NOT_ATTEMPTED, TOPIC_DENIED],  # all or nothing, as Kafka
    "list_groups": ["ok-g"],  # no-g has offsets too, but is not bob's to describe
    "describe_groups": [0, GROUP_DENIED],
    "delete_groups": [0, GROUP_DENIED],
    "create_topics": [0, TOPIC_DENIED],
    "create_partitions": [0, TOPIC_DENIED],
    "describe_configs": [0, TOPIC_DENIED, CLUSTER_DENIED],
    "incremental_alter_configs": [0, TOPIC_DENIED],
    "offset_for_leader_epoch": [0, TOPIC_DENIED],  # describe on the topic, as ListOffsets
    "delete_records": [0, TOPIC_DENIED],
    "delete_topics": [0, TOPIC_DENIED],
    # a real client library, refused: its own typed exceptions (not a hang, not a closed socket)
    "kafka-python join no-g": "GroupAuthorizationFailedError",
    "kafka-python create theirs-kp": "TopicAuthorizationFailedError",
}

NATIVE = """
import json, sys
from edgebus import Admin
from edgebus.errors import AuthorizationError
out = {}
with Admin(socket=sys.argv[1]) as a:
    for name in ("mine-native", "theirs-native"):
        try:
            a.create_topic(name)
            out[name] = "ok"
        except AuthorizationError as e:
            out[name] = "AuthorizationError: " + str(e)
print(json.dumps(out))
"""


def test_group_and_admin_apis_answer_refusals_per_item(users: Users, make_broker: Any) -> None:
    bob = users.add("ebkg")
    b = make_broker({"socket_mode": "0666", "acl": {"rules": [
        f"allow user:{bob.name} read,delete group:ok-*",
        f"allow user:{bob.name} read,write,create,delete,alter topic:mine-*"]}}).start()
    os.chmod(Path(b.socket).parent, 0o711)
    with Admin(socket=b.socket) as a:  # the supervisor's own user: the owner default
        for t in ("mine-a", "mine-b", "theirs"):
            a.create_topic(t)
    with Producer(socket=b.socket) as p:
        for t in ("mine-b", "theirs"):
            p.send(t, b"x").get(10)
            p.send(t, b"y").get(10)
    with Consumer("theirs", group_id="no-g", socket=b.socket,
                  auto_offset_reset="earliest") as c:  # no-g: offsets of root's
        while not c.poll(timeout_ms=500):
            pass
        c.commit()

    r = users.run(bob, ["python", "-m", "tests.acl.kafka_group_admin_ops", b.kafka_bootstrap])
    assert r.returncode == 0, (r.stderr, b.log()[-3000:])
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == EXPECTED, {k: (got.get(k), v) for k, v in EXPECTED.items() if got.get(k) != v}

    # What was allowed happened; what was refused did not.
    with Admin(socket=b.socket) as a:
        topics = set(a.list_topics())
        assert {"mine-new", "mine-b", "theirs"} <= topics and not {"mine-a", "theirs-new"} & topics
        mine, theirs = a.describe_topic("mine-b"), a.describe_topic("theirs")
        assert len(mine.partitions) == 2 and len(theirs.partitions) == 1
        assert mine.partitions[0].log_start_offset == 2  # DeleteRecords ran on it only
        assert theirs.partitions[0].log_start_offset == 0
        status = a.status()
    denied = {(d["principal"], d["operation"]) for d in status["acl"]["denied"]}
    assert {(f"user:{bob.name}", op) for op in ("read", "describe", "delete", "create", "alter",
                                                 "status")} <= denied, denied
    assert f"denied: user:{bob.name} may not create topic 'theirs-new'" in b.log()

    # The same principal over the native socket: the same decisions as CreateTopics above.
    r = users.run(bob, ["python", "-c", NATIVE, b.socket])
    assert r.returncode == 0, r.stderr
    native = json.loads(r.stdout.strip().splitlines()[-1])
    assert native["mine-native"] == "ok", native
    assert native["theirs-native"].startswith(
        f"AuthorizationError: user:{bob.name} may not create topic 'theirs-native'"), native
