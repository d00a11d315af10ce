"""The same rules on the Kafka listener (issue 15): a Kafka client on loopback without SASL is
the local user owning its end of the connection (/proc/net/tcp), so the rules that name a user
apply to its Kafka programs and its native ones alike; and Kafka's CreateAcls, DescribeAcls and
DeleteAcls edit those rules. Real users, real kafka-python clients, a real supervisor.

About a minute: each user's operations run in one kafka-python process (started as that user),
and a refused Kafka client waits out its metadata retries before it reports the error."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from edgebus import Admin, Producer
from tests.security.conftest import LocalUser, Users

pytestmark = pytest.mark.integration

kafka = pytest.importorskip("kafka", reason="kafka-python is the Kafka client of these tests")


def kafka_ops(users: Users, user: LocalUser, bootstrap: str, *ops: str) -> dict[str, str]:
    r = users.run(user, ["python", "-m", "tests.acl.kafka_ops", bootstrap, *ops])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def outcome(result: str) -> str:
    return result.split(":", 1)[0]


@pytest.fixture
def setup(users: Users, make_broker: Any) -> dict[str, Any]:
    alice, bob, carol = users.add("ebka"), users.add("ebkb"), users.add("ebkc")
    b = make_broker({"socket_mode": "0666", "acl": {"file": "acl.yaml", "rules": [
        f"allow user:{alice.name} read,write topic:orders",
        f"allow user:{carol.name} describe topic:orders"]}}).start()
    os.chmod(Path(b.socket).parent, 0o711)
    with Admin(socket=b.socket) as a:
        a.create_topic("orders")
    with Producer(socket=b.socket) as p:
        p.send("orders", b"seed").get(10)
    return {"broker": b, "alice": alice, "bob": bob, "carol": carol}


def test_kafka_clients_are_their_local_users(users: Users, setup: dict[str, Any]) -> None:
    b, alice, bob = setup["broker"], setup["alice"], setup["bob"]
    ops = ("listed=orders", "offsets=orders", "read=orders", "write=orders")
    got = kafka_ops(users, alice, b.kafka_bootstrap, *ops)
    assert got == {op: "ok" for op in ops}, got
    got = kafka_ops(users, bob, b.kafka_bootstrap, *ops)  # no rule: nothing, not even a name
    assert got["listed=orders"] == "hidden"
    for op in ("offsets=orders", "read=orders", "write=orders"):
        assert outcome(got[op]) in ("TopicAuthorizationFailedError", "empty"), got
    assert outcome(got["write=orders"]) == "TopicAuthorizationFailedError", got
    # Carol may describe: her clients get as far as Produce and Fetch, which are refused.
    carol = setup["carol"]
    got = kafka_ops(users, carol, b.kafka_bootstrap, *ops)
    assert got["listed=orders"] == "ok" and got["offsets=orders"] == "ok", got
    assert outcome(got["write=orders"]) == "TopicAuthorizationFailedError", got
    assert got["read=orders"] != "ok", got
    denied = {(d["principal"], d["operation"]) for d in
              Admin(socket=b.socket).status()["acl"]["denied"]}
    assert {(f"user:{bob.name}", "describe"), (f"user:{carol.name}", "write"),
            (f"user:{carol.name}", "read")} <= denied, denied
    assert f"denied: user:{carol.name} may not read topic 'orders'" in b.log()


def test_create_describe_delete_acls_edit_the_same_rules(users: Users,
                                                         setup: dict[str, Any]) -> None:
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        KafkaAdminClient,
        ResourcePattern,
        ResourcePatternFilter,
        ResourceType,
    )

    b, bob = setup["broker"], setup["bob"]
    # Root (the supervisor's own user, known from /proc/net/tcp) may administer the rules.
    admin = KafkaAdminClient(bootstrap_servers=b.kafka_bootstrap, request_timeout_ms=20_000)
    try:
        acls = [ACL(f"User:{bob.name}", "*", op, ACLPermissionType.ALLOW,
                    ResourcePattern(ResourceType.TOPIC, "ord", ACLResourcePatternType.PREFIXED))
                for op in (ACLOperation.WRITE, ACLOperation.DESCRIBE)]
        result = admin.create_acls(acls)
        assert not result["failed"], result
        assert f"allow user:{bob.name} write topic:ord*" in (Path(b.root) / "acl.yaml").read_text()
        got = kafka_ops(users, bob, b.kafka_bootstrap, "write=orders", "listed=orders")
        assert got == {"write=orders": "ok", "listed=orders": "ok"}, got
        described, err = admin.describe_acls(ACLFilter(
            f"User:{bob.name}", None, ACLOperation.ANY, ACLPermissionType.ANY,
            ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY)))
        assert {(a.operation, a.resource_pattern.resource_name) for a in described} == {
            (ACLOperation.WRITE, "ord"), (ACLOperation.DESCRIBE, "ord")}, (described, err)
        admin.delete_acls([ACLFilter(
            f"User:{bob.name}", None, ACLOperation.WRITE, ACLPermissionType.ANY,
            ResourcePatternFilter(ResourceType.TOPIC, "ord", ACLResourcePatternType.PREFIXED))])
        got = kafka_ops(users, bob, b.kafka_bootstrap, "write=orders", "listed=orders")
        assert outcome(got["write=orders"]) == "TopicAuthorizationFailedError", got
        assert got["listed=orders"] == "ok"  # the describe rule stays
    finally:
        admin.close()


@pytest.mark.parametrize("acl", [None, {"rules": []}], ids=["acl-off", "no-acl-file"])
def test_acl_changes_with_nowhere_to_keep_them_are_security_disabled(
        make_broker: Any, acl: dict[str, Any] | None) -> None:
    import kafka.admin as K
    from kafka.errors import SecurityDisabledError

    b = make_broker({"acl": acl} if acl is not None else {}).start()
    admin = K.KafkaAdminClient(bootstrap_servers=b.kafka_bootstrap, request_timeout_ms=20_000)
    try:
        result = admin.create_acls([K.ACL(
            "User:x", "*", K.ACLOperation.READ, K.ACLPermissionType.ALLOW,
            K.ResourcePattern(K.ResourceType.TOPIC, "t", K.ACLResourcePatternType.LITERAL))])
        assert result["failed"] == [SecurityDisabledError], result  # kafka-python lists classes
        deleted = admin.delete_acls([K.ACLFilter(
            "User:x", None, K.ACLOperation.ANY, K.ACLPermissionType.ANY,
            K.ResourcePatternFilter(K.ResourceType.ANY, None, K.ACLResourcePatternType.ANY))])
        assert [(matched, error) for _, matched, error in deleted] == \
            [([], SecurityDisabledError)], deleted
    finally:
        admin.close()


def test_group_rules_apply_to_a_loopback_kafka_client(users: Users, make_broker: Any) -> None:
    """A `group:` rule grants a Kafka client on loopback what it grants on the Unix socket: the
    owner's groups come from the user database (TCP has no SO_PEERCRED; the kernel's answer
    there is gid -1). The client runs with no supplementary groups of its own: only the user
    database says it is a member."""
    import subprocess

    name, _gid = users.add_group("ebkgrp")
    dave = users.add("ebkd")
    r = subprocess.run(["usermod", "-a", "-G", name, dave.name], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"usermod failed: {r.stderr.strip()}")
    b = make_broker({"socket_mode": "0666", "acl": {"rules": [
        f"allow group:{name} read,write,describe topic:gtopic"]}}).start()
    with Admin(socket=b.socket) as a:
        a.create_topic("gtopic")
    ops = ("listed=gtopic", "write=gtopic", "read=gtopic")
    got = kafka_ops(users, dave, b.kafka_bootstrap, *ops)
    assert got == {op: "ok" for op in ops}, got
