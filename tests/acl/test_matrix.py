"""Access control with real local users (issue 15): principal x operation x resource kind.

A real supervisor (root's, so root is its owner) has rules for three users made with useradd:
alice (user rules), carol and eve (members of a group with group rules; eve also has a deny rule,
which wins), and bob (no rule: the `owner` default refuses him). Each user runs the real client
library (tests/acl/client_ops.py) over the socket and over shared-memory rings, and the CLI; every
API that touches a topic, a group or the cluster is tried, allowed and denied.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgebus import Admin, Consumer, Producer
from edgebus.errors import AuthorizationError
from tests.security.conftest import CHILD_BOUND_S, LocalUser, Users

pytestmark = pytest.mark.integration

OK, DENIED, HIDDEN = "ok", "AuthorizationError", "hidden"


def rules(alice: str, eve: str, sensors: str) -> list[str]:
    return [
        f"allow user:{alice} all topic:orders",
        f"allow user:{alice} read group:billing",
        f"allow user:{alice} status cluster",
        f"allow user:{alice} create,delete topic:scratch-{alice}*",
        f"allow group:{sensors} read,write topic:sensors.*",
        f"allow group:{sensors} read group:sensor-*",
        f"allow group:{sensors} describe topic:orders",
        f"deny user:{eve} write topic:sensors.*",
        "allow user:* read,write topic:home.%u.*",
        "allow user:* create topic:home.%u.*",
    ]


def matrix(alice: str, bob: str, carol: str, eve: str) -> dict[str, list[tuple[str, str]]]:
    """Per user: (operation=resource, expected) in the order they are tried."""
    home = {u: f"home.{u}.x" for u in (alice, bob, carol, eve)}
    def common(u: str) -> list[tuple[str, str]]:
        return [(f"topic.write={home[u]}", OK), (f"topic.read={home[u]}", OK),
                (f"topic.write=home.{alice}.x" if u != alice else f"topic.write=home.{bob}.x",
                 DENIED)]

    return {
        alice: [
            ("topic.describe=orders", OK), ("topic.listed=orders", OK),
            ("topic.write=orders", OK), ("topic.read=orders", OK),
            ("topic.offsets=orders", OK), ("topic.batches=orders", OK),
            ("topic.alter=orders", OK),
            ("topic.describe=sensors.temp", DENIED), ("topic.listed=sensors.temp", HIDDEN),
            ("topic.write=sensors.temp", DENIED), ("topic.read=sensors.temp", DENIED),
            ("group.read=billing/orders", OK), ("group.describe=billing", OK),
            ("group.listed=billing", OK), ("group.reset=billing/orders", OK),
            ("group.read=sensor-a/sensors.temp", DENIED), ("group.describe=sensor-a", DENIED),
            ("group.listed=sensor-a", HIDDEN),
            ("cluster.status=", OK), ("cluster.transactions=", OK),
            (f"topic.create=scratch-{alice}-1", OK), (f"topic.delete=scratch-{alice}-1", OK),
            ("topic.create=other", DENIED), ("topic.delete=sensors.temp", DENIED),
            ("topic.alter=sensors.temp", DENIED),
            # native transactions: write on what they add, read on the group they commit for
            ("txn.write=orders", OK), ("txn.write=sensors.temp", DENIED),
            ("txn.offsets=billing/orders", OK), ("txn.offsets=sensor-a/sensors.temp", DENIED),
            *common(alice),
        ],
        bob: [
            ("topic.describe=orders", DENIED), ("topic.listed=orders", HIDDEN),
            ("topic.write=orders", DENIED), ("topic.read=orders", DENIED),
            ("topic.offsets=orders", DENIED), ("topic.batches=orders", DENIED),
            ("topic.alter=orders", DENIED), ("topic.delete=orders", DENIED),
            ("topic.create=bobs", DENIED),
            ("group.read=billing/orders", DENIED), ("group.describe=billing", DENIED),
            ("group.listed=billing", HIDDEN), ("group.reset=billing/orders", DENIED),
            ("cluster.status=", DENIED), ("cluster.transactions=", DENIED),
            ("txn.write=orders", DENIED), ("txn.offsets=billing/orders", DENIED),
            *common(bob),
        ],
        carol: [
            ("topic.describe=sensors.temp", OK), ("topic.listed=sensors.temp", OK),
            ("topic.write=sensors.temp", OK), ("topic.read=sensors.temp", OK),
            ("topic.alter=sensors.temp", DENIED), ("topic.delete=sensors.temp", DENIED),
            # May describe orders (so the clients get as far as PRODUCE and FETCH), no more.
            ("topic.describe=orders", OK), ("topic.write=orders", DENIED),
            ("topic.read=orders", DENIED), ("topic.alter=orders", DENIED),
            ("topic.offsets=orders", OK), ("topic.batches=orders", DENIED),
            ("group.read=sensor-a/sensors.temp", OK), ("group.describe=sensor-a", OK),
            ("group.listed=sensor-a", OK), ("group.reset=sensor-a/sensors.temp", OK),
            ("group.read=billing/orders", DENIED), ("cluster.status=", DENIED),
            ("cluster.transactions=", DENIED),
            # ADD_PARTITIONS_TO_TXN needs write: describe alone is not enough
            ("txn.write=sensors.temp", OK), ("txn.write=orders", DENIED),
            *common(carol),
        ],
        eve: [  # in the sensors group too, but denied writing: deny wins
            ("topic.read=sensors.temp", OK), ("topic.describe=sensors.temp", OK),
            ("topic.write=sensors.temp", DENIED),
            ("group.read=sensor-b/sensors.temp", OK),
            ("txn.write=sensors.temp", DENIED),
            *common(eve),
        ],
    }


def run_ops(users: Users, user: LocalUser, sock: str, transport: str, ops: list[str],
            groups: tuple[int, ...] = ()) -> dict[str, str]:
    r = users.run(user, ["python", "-m", "tests.acl.client_ops", sock, transport, *ops],
                  groups=groups)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def outcome(result: str) -> str:
    return result.split(":", 1)[0] if result not in (OK, HIDDEN) else result


@pytest.fixture
def world(users: Users, make_broker: Any) -> dict[str, Any]:
    alice, bob, carol, eve = (users.add(p) for p in ("ebal", "ebbo", "ebca", "ebev"))
    sensors, sensors_gid = users.add_group("ebsens")
    b = make_broker({"socket_mode": "0666", "acl": {
        "rules": rules(alice.name, eve.name, sensors)}}).start()
    os.chmod(Path(b.socket).parent, 0o711)  # other users may reach the socket
    a = Admin(socket=b.socket)
    for t in ("orders", "sensors.temp", *(f"home.{u.name}.x" for u in (alice, bob, carol, eve))):
        a.create_topic(t)
    with Producer(socket=b.socket) as p:
        for t in ("orders", "sensors.temp"):
            p.send(t, b"seed").get(10)
    for g, t in (("billing", "orders"), ("sensor-a", "sensors.temp")):
        c = Consumer(t, group_id=g, socket=b.socket, auto_offset_reset="earliest",
                     enable_auto_commit=False)
        while not c.poll(timeout_ms=200):
            pass
        c.commit()
        c.close()
    a.close()
    return {"broker": b, "alice": alice, "bob": bob, "carol": carol, "eve": eve,
            "sensors_gid": sensors_gid}


def test_principal_operation_resource_matrix(users: Users, world: dict[str, Any]) -> None:
    b = world["broker"]
    who = {u.name: u for u in (world["alice"], world["bob"], world["carol"], world["eve"])}
    table = matrix(*(world[k].name for k in ("alice", "bob", "carol", "eve")))
    mismatches = []
    for name, rows in table.items():
        groups = (world["sensors_gid"],) if name in (world["carol"].name, world["eve"].name) else ()
        got = run_ops(users, who[name], b.socket, "socket", [op for op, _ in rows], groups)
        mismatches += [(name, op, want, got[op]) for op, want in rows
                       if outcome(got[op]) != want]
        # The data plane again over shared-memory rings: the same rules on the same check.
        data_rows = [(op, want) for op, want in rows if op.startswith(("topic.write", "topic.read"))]
        got = run_ops(users, who[name], b.socket, "shm", [op for op, _ in data_rows], groups)
        mismatches += [(name, f"shm {op}", want, got[op]) for op, want in data_rows
                       if outcome(got[op]) != want]
    assert not mismatches, "\n".join(f"{n}: {op}: want {w}, got {g}" for n, op, w, g in mismatches)
    # Denials name the principal, the operation and the resource; they are counted per
    # principal and operation, and logged.
    denied = {(d["principal"], d["operation"]): d["count"]
              for d in Admin(socket=b.socket).status()["acl"]["denied"]}
    bob = f"user:{world['bob'].name}"
    assert denied[(bob, "describe")] >= 2 and denied[(bob, "read")] >= 1
    assert denied[(bob, "create")] == 1 and denied[(bob, "status")] == 2  # STATUS, LIST_TRANSACTIONS
    log = b.log()
    assert f"denied: {bob} may not describe topic 'orders'" in log
    # At most once a minute per principal, operation and resource, however often denied.
    assert log.count(f"denied: {bob} may not describe topic 'orders'") == 1


def test_denied_error_names_operation_and_resource(users: Users, world: dict[str, Any]) -> None:
    b, bob = world["broker"], world["bob"]
    got = run_ops(users, bob, b.socket, "socket", ["topic.describe=orders", "cluster.status="])
    assert got["topic.describe=orders"].startswith(
        f"AuthorizationError: user:{bob.name} may not describe topic 'orders': no rule allows it "
        "(default policy owner)")
    assert "may not status the cluster" in got["cluster.status="]
    # The error is typed on the client side, with a hint for the operator.
    assert AuthorizationError.code == 50 and "edgebus acl add" in AuthorizationError.hint


def test_the_cli_as_a_denied_and_an_allowed_user(users: Users, world: dict[str, Any]) -> None:
    b, alice, bob = world["broker"], world["alice"], world["bob"]
    cli = ["python", "-m", "edgebus.cli.main", "--socket", b.socket]
    denied = users.run(bob, [*cli, "consume", "orders", "--from-beginning", "--max", "1"])
    assert denied.returncode == 1
    assert f"user:{bob.name} may not describe topic 'orders'" in denied.stderr
    carol, gids = world["carol"], (world["sensors_gid"],)
    denied = users.run(carol, [*cli, "consume", "orders", "--from-beginning", "--max", "1"],
                       groups=gids)
    assert denied.returncode == 1
    assert f"user:{carol.name} may not read topic 'orders'" in denied.stderr
    p = users.popen(carol, [*cli, "produce", "orders"], groups=gids, stdin=subprocess.PIPE)
    _, err = p.communicate("line\n", timeout=CHILD_BOUND_S)
    assert p.returncode != 0 and f"user:{carol.name} may not write topic 'orders'" in err
    listed = users.run(bob, [*cli, "topics", "list"])
    assert listed.returncode == 0 and "orders" not in listed.stdout
    assert f"home.{bob.name}.x" in listed.stdout  # what he may describe, he sees
    ok = users.run(alice, [*cli, "consume", "orders", "--from-beginning", "--max", "1"])
    assert ok.returncode == 0 and "seed" in ok.stdout, ok.stderr
