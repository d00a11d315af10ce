"""Run as a test's local user: every Kafka group and admin API once on a resource the rules
allow and once on one they do not, over loopback TCP without SASL (the supervisor knows the user
from /proc/net/tcp); prints one JSON line {case: [error codes of the answer's items]}.

    python -m tests.acl.kafka_group_admin_ops BOOTSTRAP

Raw requests (kio entities, the Kafka wire format) rather than a client library's admin calls:
the test asserts the exact code of each item, which the libraries turn into exceptions or
retries; then kafka-python's consumer and admin client, refused, for their typed exceptions.
The groups "ok-g"/"no-g" and topics "mine-*"/"theirs*" are the test's (test_kafka_groups).
"""

from __future__ import annotations

import io
import json
import socket
import struct
import sys
from typing import Any

from kio.index import load_payload_module
from kio.serial import entity_reader, entity_writer
from kio.static.constants import EntityType

from edgebus.server.kafka.shape import build


def _cls(api_key: int, version: int, kind: EntityType) -> type:
    mod = load_payload_module(api_key, version, kind)
    cls: type = next(v for v in vars(mod).values() if isinstance(v, type)
                     and getattr(v, "__type__", None) is kind and v.__module__ == mod.__name__)
    return cls


def _read(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            raise ConnectionError("the broker closed the connection")
        out += d
    return out


class Client:
    def __init__(self, bootstrap: str) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=20)
        self.corr = 0

    def call(self, api_key: int, version: int, **body: Any) -> Any:
        req_cls = _cls(api_key, version, EntityType.request)
        req = build(req_cls, **body)
        self.corr += 1
        buf = io.BytesIO()
        buf.write(struct.pack(">hhih", api_key, version, self.corr, 3) + b"acl")
        if req_cls.__flexible__:  # type: ignore[attr-defined]
            buf.write(b"\x00")
        entity_writer(req_cls)(buf, req)
        payload = buf.getvalue()
        self.s.sendall(struct.pack(">i", len(payload)) + payload)
        frame = _read(self.s, struct.unpack(">i", _read(self.s, 4))[0])
        off = 5 if req_cls.__flexible__ else 4  # type: ignore[attr-defined]
        resp, _ = entity_reader(_cls(api_key, version, EntityType.response))(frame, off)
        return resp


def codes(items: Any, attr: str = "error_code") -> list[int]:
    return [int(getattr(i, attr)) for i in items]


def run(c: Client) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for g in ("ok-g", "no-g"):
        tag = g[:2]
        out[f"find_coordinator {tag}"] = [int(c.call(10, 3, key=g, key_type=0).error_code)]
        out[f"join {tag}"] = [int(c.call(
            11, 5, group_id=g, session_timeout=10_000, rebalance_timeout=10_000, member_id="",
            group_instance_id=None, protocol_type="connect",
            protocols=[dict(name="range", metadata=b"")]).error_code)]
        out[f"sync {tag}"] = [int(c.call(14, 3, group_id=g, generation_id=1, member_id="m",
                                         group_instance_id=None, assignments=[]).error_code)]
        out[f"heartbeat {tag}"] = [int(c.call(12, 3, group_id=g, generation_id=1, member_id="m",
                                              group_instance_id=None).error_code)]
        out[f"leave {tag}"] = [int(c.call(13, 3, group_id=g, members=[
            dict(member_id="m", group_instance_id=None)]).error_code)]
        r = c.call(8, 7, group_id=g, generation_id_or_member_epoch=-1, member_id="",
                   group_instance_id=None, topics=[
                       dict(name=t, partitions=[dict(partition_index=0, committed_offset=1,
                                                     committed_leader_epoch=-1,
                                                     committed_metadata="")])
                       for t in ("mine-b", "theirs")])
        out[f"offset_commit {tag}"] = [codes(t.partitions)[0] for t in r.topics]
        r = c.call(9, 7, group_id=g, topics=None, require_stable=False)
        out[f"offset_fetch {tag}"] = [int(r.error_code)]
        # Transactions (an unknown producer id: what is allowed reaches the coordinator).
        txn = dict(transactional_id="t", producer_id=7, producer_epoch=0)
        out[f"add_offsets_to_txn {tag}"] = [int(c.call(25, 3, group_id=g, **txn).error_code)]
        r = c.call(28, 3, group_id=g, generation_id=-1, member_id="", group_instance_id=None,
                   **txn, topics=[dict(name=t, partitions=[dict(
                       partition_index=0, committed_offset=1, committed_leader_epoch=-1,
                       committed_metadata="")]) for t in ("mine-b", "theirs")])
        out[f"txn_offset_commit {tag}"] = [codes(t.partitions)[0] for t in r.topics]
    r = c.call(24, 3, v3_and_below_transactional_id="t", v3_and_below_producer_id=7,
               v3_and_below_producer_epoch=0, v3_and_below_topics=[
                   dict(name=t, partitions=[0]) for t in ("mine-b", "theirs")])
    out["add_partitions_to_txn"] = [codes(t.results_by_partition, "partition_error_code")[0]
                                    for t in r.results_by_topic_v3_and_below]
    out["list_groups"] = sorted(g.group_id for g in c.call(16, 3).groups)
    out["describe_groups"] = codes(c.call(15, 4, groups=["ok-g", "no-g"],
                                          include_authorized_operations=False).groups)
    out["delete_groups"] = codes(c.call(42, 1, groups_names=["ok-g", "no-g"]).results)
    out["create_topics"] = codes(c.call(19, 4, timeout=10_000, validate_only=False, topics=[
        dict(name=n, num_partitions=1, replication_factor=1, assignments=[], configs=[])
        for n in ("mine-new", "theirs-new")]).topics)
    out["create_partitions"] = codes(c.call(37, 1, timeout=10_000, validate_only=False, topics=[
        dict(name=n, count=2, assignments=None) for n in ("mine-b", "theirs")]).results)
    out["describe_configs"] = codes(c.call(32, 2, include_synonyms=False, resources=[
        dict(resource_type=t, resource_name=n, configuration_keys=None)
        for t, n in ((2, "mine-b"), (2, "theirs"), (4, "1"))]).results)
    out["incremental_alter_configs"] = codes(c.call(44, 0, validate_only=False, resources=[
        dict(resource_type=2, resource_name=n,
             configs=[dict(name="retention.ms", config_operation=0, value="3600000")])
        for n in ("mine-b", "theirs")]).responses)
    out["offset_for_leader_epoch"] = [codes(t.partitions)[0] for t in c.call(
        23, 4, replica_id=-1, topics=[dict(topic=n, partitions=[dict(
            partition=0, current_leader_epoch=-1, leader_epoch=0)]) for n in ("mine-b", "theirs")]
    ).topics]
    out["delete_records"] = [codes(t.partitions)[0] for t in c.call(21, 1, timeout=10_000, topics=[
        dict(name=n, partitions=[dict(partition_index=0, offset=-1)])
        for n in ("mine-b", "theirs")]).topics]
    out["delete_topics"] = codes(c.call(20, 4, timeout=10_000,
                                        topic_names=["mine-a", "theirs"]).responses)
    return out


def library(bootstrap: str) -> dict[str, str]:
    """The same refusals through kafka-python's consumer and admin client: typed exceptions."""
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.admin import NewTopic

    out = {}
    c = KafkaConsumer("mine-b", bootstrap_servers=bootstrap, group_id="no-g",
                      request_timeout_ms=11_000)
    try:
        c.poll(timeout_ms=5000)
        out["kafka-python join no-g"] = "ok"
    except Exception as e:
        out["kafka-python join no-g"] = type(e).__name__
    finally:
        c.close()
    a = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=11_000)
    try:
        a.create_topics([NewTopic("theirs-kp", 1, 1)])
        out["kafka-python create theirs-kp"] = "ok"
    except Exception as e:
        out["kafka-python create theirs-kp"] = type(e).__name__
    finally:
        a.close()
    return out


def main() -> None:
    print(json.dumps({**run(Client(sys.argv[1])), **library(sys.argv[1])}))


if __name__ == "__main__":
    main()
