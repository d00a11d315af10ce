"""Run as a test's local user: try each operation named on the command line with the real client
library and print one JSON line {operation: "ok" | "<ErrorClass>: <message>"}.

    python -m tests.acl.client_ops SOCKET TRANSPORT OP=RESOURCE ...

OP is topic.write, topic.read, topic.batches, topic.describe, topic.offsets, topic.listed, topic.create, topic.alter,
topic.delete, group.read, group.describe, group.listed, group.reset, cluster.status, cluster.transactions, txn.write,
txn.offsets; RESOURCE a topic or group name (group.read, group.reset and txn.offsets take
GROUP/TOPIC).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from edgebus import Admin, BatchReader, Consumer, Producer
from edgebus.client.types import TopicPartition


def run(sock: str, transport: str, op: str, arg: str) -> str:
    group, _, topic = arg.partition("/")
    if op == "topic.write":
        with Producer(socket=sock, transport=transport, linger_ms=0) as p:
            p.send(arg, b"from " + transport.encode()).get(10)
        return "ok"
    if op == "topic.read":
        c = Consumer(socket=sock, transport=transport, auto_offset_reset="earliest")
        try:
            c.assign([TopicPartition(arg, 0)])
            c.seek(TopicPartition(arg, 0), 0)
            c.poll(timeout_ms=200)
        finally:
            c.close()
        return "ok"
    if op == "group.read":
        c = Consumer(topic, group_id=group, socket=sock, transport=transport,
                     auto_offset_reset="earliest", enable_auto_commit=False)
        try:
            for _ in range(20):
                if c.poll(timeout_ms=200):
                    break
            c.commit()
        finally:
            c.close()
        return "ok"
    if op in ("txn.write", "txn.offsets"):  # a native transaction: ADD_PARTITIONS / TXN_OFFSET_COMMIT
        import os

        with Producer(socket=sock, transport=transport, linger_ms=0,
                      transactional_id=f"acl-{op}-{arg}-{os.getuid()}") as p:
            p.init_transactions()
            p.begin_transaction()
            try:
                if op == "txn.write":
                    p.send(arg, b"in a transaction").get(10)
                else:
                    p.send_offsets_to_transaction({TopicPartition(topic, 0): 1}, group)
            finally:
                p.abort_transaction()
        return "ok"
    if op == "topic.batches":  # REPLICA_FETCH: the replicator's read of whole batches
        with BatchReader(sock) as r:
            r.read(arg, 0, 0)
        return "ok"
    a = Admin(socket=sock)
    try:
        actions: dict[str, Callable[[], Any]] = {
            "topic.describe": lambda: a.describe_topic(arg),
            "topic.offsets": lambda: a.list_offsets([TopicPartition(arg, 0)], -1),
            "topic.listed": lambda: "ok" if arg in a.list_topics() else "hidden",
            "topic.create": lambda: a.create_topic(arg),
            "topic.alter": lambda: a.alter_topic_config(arg, {"retention_ms": 3_600_000}),
            "topic.delete": lambda: a.delete_topic(arg),
            "group.describe": lambda: a.describe_group(arg),
            "group.listed": lambda: "ok" if arg in [g.group_id for g in a.list_groups()]
            else "hidden",
            "group.reset": lambda: a.reset_offsets(group, topic, earliest=True),
            "cluster.status": lambda: a.status(),
            "cluster.transactions": lambda: a.list_transactions(),
        }
        out = actions[op]()
        return out if isinstance(out, str) else "ok"
    finally:
        a.close()


def main() -> None:
    sock, transport = sys.argv[1], sys.argv[2]
    results = {}
    for item in sys.argv[3:]:
        op, _, arg = item.partition("=")
        try:
            results[item] = run(sock, transport, op, arg)
        except Exception as e:
            results[item] = f"{type(e).__name__}: {e}"
    print(json.dumps(results))


if __name__ == "__main__":
    main()
