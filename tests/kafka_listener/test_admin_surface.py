"""The admin calls of the real clients that failed against the listener before they were served
(docs/KAFKA.md, "Admin clients"): AlterConfigs (confluent-kafka, aiokafka, kafka-python),
ListTransactions, DescribeTransactions and DescribeProducers (kafka-python), OffsetDelete,
DescribeLogDirs, ElectLeaders, the partition reassignment APIs and DescribeUserScramCredentials,
each through a client library nobody here wrote, checked against the native view of the log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource as AConfigResource
from aiokafka.admin.config_resource import ConfigResourceType as AConfigResourceType
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import ElectionType, KafkaException, TopicCollection, TopicPartition
from confluent_kafka import Producer as CKProducer
from confluent_kafka.admin import (
    AclOperation,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)
from kafka import TopicPartition as KTP
from kafka.admin import ConfigResource as KConfigResource
from kafka.admin import ConfigResourceType, KafkaAdminClient
from kafka.errors import (
    ClusterAuthorizationFailedError,
    GroupIdNotFoundError,
    InvalidReplicationAssignmentError,
    NoReassignmentInProgressError,
    TransactionalIdNotFoundError,
)

from edgebus import Admin, Producer
from edgebus.server.kafka import sasl
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic

pytestmark = pytest.mark.integration

INVALID_CONFIG, ELECTION_NOT_NEEDED, RESOURCE_NOT_FOUND = 40, 84, 91
CLUSTER_DENIED = 31
UNKNOWN_TOPIC = 3


def native_configs(b: EmbeddedBroker, topic: str) -> dict[str, str]:
    with Admin(socket=b.socket) as a:
        return {c.name: c.value for c in a.describe_topic(topic).configs}


@pytest.fixture
def ka(kbroker: EmbeddedBroker) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap)
    yield client
    client.close()


def test_alter_configs_replaces_the_whole_set(kbroker: EmbeddedBroker,
                                              ka: KafkaAdminClient) -> None:
    create_topic(kbroker, "ac")
    default_segment = native_configs(kbroker, "ac")["segment_bytes"]
    ac = AdminClient({"bootstrap.servers": kbroker.kafka_bootstrap})
    inc = ConfigResource("topic", "ac", incremental_configs=[
        ConfigEntry("segment.bytes", "1048576", incremental_operation=AlterConfigOpType.SET)])
    ac.incremental_alter_configs([inc])[inc].result(15)
    assert native_configs(kbroker, "ac")["segment_bytes"] == "1048576"
    # AlterConfigs: exactly the settings named, every other one back to its default (Kafka's).
    whole = ConfigResource("topic", "ac", set_config={"retention.ms": "120000"})
    assert ac.alter_configs([whole])[whole].result(15) is None
    cfg = native_configs(kbroker, "ac")
    assert (cfg["retention_ms"], cfg["segment_bytes"]) == ("120000", default_segment)
    bad = ConfigResource("topic", "ac", set_config={"flush.ms": "5"})
    with pytest.raises(KafkaException) as ei:
        ac.alter_configs([bad])[bad].result(15)
    assert ei.value.args[0].code() == INVALID_CONFIG
    assert native_configs(kbroker, "ac")["retention_ms"] == "120000", "a refused set changes nothing"

    # kafka-python's AlterConfigs sends the topic's other modified settings too (it reads them
    # with DescribeConfigs: config_source DYNAMIC_TOPIC_CONFIG), so retention.ms stays.
    ka.alter_configs([KConfigResource(ConfigResourceType.TOPIC, "ac",
                                      configs={"retention.bytes": "500000"})], incremental=False)
    cfg = native_configs(kbroker, "ac")
    assert (cfg["retention_bytes"], cfg["retention_ms"]) == ("500000", "120000"), cfg

    async def aio() -> Any:
        client = AIOKafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap)
        await client.start()
        try:
            return await client.alter_configs([AConfigResource(
                AConfigResourceType.TOPIC, "ac", {"cleanup.policy": "compact,delete"})])
        finally:
            await client.close()

    (resp,) = asyncio.run(aio())
    assert [r[0] for r in resp.resources] == [0]
    cfg = native_configs(kbroker, "ac")
    assert (cfg["cleanup_policy"], cfg["retention_bytes"]) == ("compact,delete", "-1")


def test_transactions_and_producers_listed_and_described(kbroker: EmbeddedBroker,
                                                         ka: KafkaAdminClient) -> None:
    create_topic(kbroker, "tx", partitions=2)
    with Producer(socket=kbroker.socket) as p:
        p.send("tx", b"before", partition=0).get(10)
    tp = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap, "transactional.id": "tx-a",
                     "transaction.timeout.ms": 50000})
    tp.init_transactions(30)
    tp.begin_transaction()
    tp.produce("tx", b"in txn", partition=0)
    assert tp.flush(30) == 0

    (listing,) = ka.list_transactions()[0]
    assert (listing.transactional_id, listing.state.value) == ("tx-a", "Ongoing")
    assert ka.list_transactions(state_filters=["Empty"]) == {0: []}
    assert ka.list_transactions(producer_id_filters=[listing.producer_id])[0] == [listing]
    desc = ka.describe_transactions(["tx-a"])["tx-a"]
    assert (desc.state.value, desc.producer_id, desc.transaction_timeout_ms) == (
        "Ongoing", listing.producer_id, 50000)
    assert desc.topic_partitions == {KTP("tx", 0)} and desc.transaction_start_time_ms > 0
    with pytest.raises(TransactionalIdNotFoundError):
        ka.describe_transactions(["nobody"])
    (state,) = ka.describe_producers([KTP("tx", 0)])[KTP("tx", 0)].active_producers
    assert (state.producer_id, state.last_sequence, state.current_transaction_start_offset) == (
        listing.producer_id, 0, 1)  # the open transaction's first batch holds offset 1
    assert ka.describe_producers([KTP("tx", 1)])[KTP("tx", 1)].active_producers == []

    tp.commit_transaction(30)
    assert ka.describe_transactions(["tx-a"])["tx-a"].state.value == "Empty"
    (state,) = ka.describe_producers([KTP("tx", 0)])[KTP("tx", 0)].active_producers
    assert state.current_transaction_start_offset == -1


def test_delete_group_offsets(kbroker: EmbeddedBroker, ka: KafkaAdminClient) -> None:
    create_topic(kbroker, "od", partitions=2)
    create_topic(kbroker, "od2")
    c = CKConsumer({"bootstrap.servers": kbroker.kafka_bootstrap, "group.id": "od-g",
                    "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition("od", 0, 5), TopicPartition("od", 1, 6),
                      TopicPartition("od2", 0, 7)], asynchronous=False)
    c.close()
    res = ka.delete_group_offsets("od-g", [KTP("od", 0)])
    assert [e.__name__ for e in res.values()] == ["NoError"]
    left = ka.list_group_offsets("od-g")["od-g"]
    assert {tp: o.offset for tp, o in left.items()} == {KTP("od", 1): 6, KTP("od2", 0): 7}
    with Admin(socket=kbroker.socket) as a:  # the native view of the same store
        assert {(tp.topic, tp.partition) for tp in a.list_group_offsets("od-g")} == {
            ("od", 1), ("od2", 0)}
    with pytest.raises(GroupIdNotFoundError):
        ka.delete_group_offsets("od-nobody", [KTP("od", 0)])
    # A member subscribed to the topic keeps its offsets (it would commit them again).
    member = CKConsumer({"bootstrap.servers": kbroker.kafka_bootstrap, "group.id": "od-g",
                        "enable.auto.commit": False})
    member.subscribe(["od2"])
    try:
        while not member.assignment():
            member.poll(0.5)
        res = ka.delete_group_offsets("od-g", [KTP("od2", 0), KTP("od", 1)])
        assert {tp: e.__name__ for tp, e in res.items()} == {
            KTP("od2", 0): "GroupSubscribedToTopicError", KTP("od", 1): "NoError"}
    finally:
        member.close()
    left = ka.list_group_offsets("od-g")["od-g"]
    assert {tp: o.offset for tp, o in left.items()} == {KTP("od2", 0): 7}


def test_log_dirs_elections_and_reassignments(kbroker: EmbeddedBroker,
                                              ka: KafkaAdminClient) -> None:
    create_topic(kbroker, "ld", partitions=2)
    with Producer(socket=kbroker.socket) as p:
        for _ in range(20):
            p.send("ld", b"x" * 100, partition=1)
        p.flush()
    ((broker, dirs),) = [(d["broker"], d["log_dirs"]) for d in ka.describe_log_dirs()]
    (d,) = dirs
    assert broker == 0 and d["error_code"] == 0 and d["log_dir"].endswith("data")
    sizes = {p["partition_index"]: p["partition_size"]
             for t in d["topics"] if t["name"] == "ld" for p in t["partitions"]}
    with Admin(socket=kbroker.socket) as a:
        native = {p.partition: p.size_bytes for p in a.describe_topic("ld").partitions}
    assert sizes == native and native[1] > 2000 and native[0] == 0

    ac = AdminClient({"bootstrap.servers": kbroker.kafka_bootstrap})
    got = ac.elect_leaders(ElectionType.PREFERRED,
                           [TopicPartition("ld", 0), TopicPartition("nope", 0)]).result(15)
    assert {(tp.topic, tp.partition): err.code() for tp, err in got.items()} == {
        ("ld", 0): ELECTION_NOT_NEEDED, ("nope", 0): UNKNOWN_TOPIC}
    ka.elect_leaders(0, {"ld": [0, 1]})  # ELECTION_NOT_NEEDED: kafka-python ignores it, as Kafka's

    assert ka.list_partition_reassignments() == {}
    assert ka.alter_partition_reassignments({KTP("ld", 0): [0]}) == {KTP("ld", 0): None}
    assert ka.alter_partition_reassignments({KTP("ld", 0): [0, 1], KTP("ld", 1): None}) == {
        KTP("ld", 0): InvalidReplicationAssignmentError, KTP("ld", 1): NoReassignmentInProgressError}


@pytest.fixture
def scram_broker(tmp_path: Path, make_broker: Callable[..., EmbeddedBroker]) -> EmbeddedBroker:
    creds = tmp_path / "users.yaml"
    sasl.add_user(creds, "alice", "wonderland")
    sasl.add_user(creds, "bob", "builder", mechanisms=("SCRAM-SHA-512",))
    sasl.add_user(creds, "olga", "operator", mechanisms=("SCRAM-SHA-512",))
    return make_broker({
        "kafka": {"sasl_mechanisms": ["SCRAM-SHA-256", "SCRAM-SHA-512"],
                  "sasl_credentials_file": str(creds)},
        "acl": {"rules": ["allow sasl:alice status,admin cluster",  # admin: all rights
                          "allow sasl:olga read topic:ops-*", "allow sasl:olga describe group:ops-*",
                          "allow sasl:olga status cluster"]}}).start()


def _scram_admin(b: EmbeddedBroker, user: str, password: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": b.kafka_bootstrap, "security.protocol": "SASL_PLAINTEXT",
                        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user,
                        "sasl.password": password})


def test_describe_user_scram_credentials(scram_broker: EmbeddedBroker) -> None:
    ac = _scram_admin(scram_broker, "alice", "wonderland")
    got = ac.describe_user_scram_credentials().result(15)
    assert {u: sorted((i.mechanism, i.iterations) for i in d.scram_credential_infos)
            for u, d in got.items()} == {
        "alice": [(ScramMechanism.SCRAM_SHA_256, sasl.DEFAULT_ITERATIONS),
                  (ScramMechanism.SCRAM_SHA_512, sasl.DEFAULT_ITERATIONS)],
        "bob": [(ScramMechanism.SCRAM_SHA_512, sasl.DEFAULT_ITERATIONS)],
        "olga": [(ScramMechanism.SCRAM_SHA_512, sasl.DEFAULT_ITERATIONS)]}
    futures = ac.describe_user_scram_credentials(["bob", "carol"])
    assert futures["bob"].result(15).user == "bob"
    with pytest.raises(KafkaException) as ei:
        futures["carol"].result(15)
    assert ei.value.args[0].code() == RESOURCE_NOT_FOUND


def test_cluster_apis_need_cluster_rights(scram_broker: EmbeddedBroker) -> None:
    bob = KafkaAdminClient(bootstrap_servers=scram_broker.kafka_bootstrap,
                           security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                           sasl_plain_username="bob", sasl_plain_password="builder")
    try:
        # Describing users needs status on the cluster (as `edgebus status`): bob has no rule.
        # (kafka-python: librdkafka 2.12 aborts on this answer, Kafka's own: docs/KAFKA.md.)
        with pytest.raises(ClusterAuthorizationFailedError):
            bob.describe_user_scram_credentials()
        with pytest.raises(ClusterAuthorizationFailedError):
            bob.list_transactions()
        with pytest.raises(ClusterAuthorizationFailedError):
            bob.elect_leaders(0, None)
    finally:
        bob.close()


def test_describe_topic_partitions_in_pages(kbroker: EmbeddedBroker, ka: KafkaAdminClient) -> None:
    create_topic(kbroker, "dp-a", partitions=3)
    create_topic(kbroker, "dp-b", partitions=2)
    names = ["dp-a", "dp-b", "dp-none"]

    def page(cursor: dict[str, Any] | None) -> tuple[list[tuple[str, int, list[int]]], Any]:
        got = ka.describe_topic_partitions(names, response_partition_limit=4, cursor=cursor)
        return ([(t["name"], t["error_code"], [p["partition_index"] for p in t["partitions"]])
                 for t in got["topics"]], got["next_cursor"])

    first, cursor = page(None)
    assert first == [("dp-a", 0, [0, 1, 2]), ("dp-b", 0, [0])]
    assert (cursor["topic_name"], cursor["partition_index"]) == ("dp-b", 1)
    second, cursor = page(cursor)
    assert second == [("dp-b", 0, [1]), ("dp-none", UNKNOWN_TOPIC, [])] and cursor is None


def test_alter_user_scram_credentials(scram_broker: EmbeddedBroker, tmp_path: Path) -> None:
    alice = _scram_admin(scram_broker, "alice", "wonderland")
    done = alice.alter_user_scram_credentials([
        UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512,
                                                                  10000), b"seashells"),
        UserScramCredentialDeletion("bob", ScramMechanism.SCRAM_SHA_512)])
    assert {u: f.result(15) for u, f in done.items()} == {"carol": None, "bob": None}
    text = (tmp_path / "users.yaml").read_text()
    assert "carol" in text and "seashells" not in text and "bob" not in text
    carol = _scram_admin(scram_broker, "carol", "seashells")  # authenticates at once
    assert carol.list_topics(timeout=15).cluster_id == "edgebus"
    got = alice.describe_user_scram_credentials().result(15)
    assert {u: [(i.mechanism, i.iterations) for i in d.scram_credential_infos]
            for u, d in got.items()}["carol"] == [(ScramMechanism.SCRAM_SHA_512, 10000)]
    assert "bob" not in got
    with pytest.raises(KafkaException) as ei:  # nothing to delete
        alice.alter_user_scram_credentials([UserScramCredentialDeletion(
            "dave", ScramMechanism.SCRAM_SHA_256)])["dave"].result(15)
    assert ei.value.args[0].code() == RESOURCE_NOT_FOUND
    # Altering users needs admin on the cluster: carol has no rule (per user, as Kafka answers).
    with pytest.raises(KafkaException) as ei:
        carol.alter_user_scram_credentials([UserScramCredentialUpsertion(
            "carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), b"x")])[
                "carol"].result(15)
    assert ei.value.args[0].code() == CLUSTER_DENIED


def test_list_config_resources(kbroker: EmbeddedBroker, ka: KafkaAdminClient) -> None:
    create_topic(kbroker, "lc-b")
    create_topic(kbroker, "lc-a")
    got = ka.list_config_resources()
    assert {k: sorted(v) for k, v in got.items()} == {"topic": ["lc-a", "lc-b"], "broker": ["0"]}
    assert ka.list_config_resources(["TOPIC"]) == {"topic": ["lc-a", "lc-b"]}
    assert ka.list_config_resources(["GROUP"]) == {}


def test_authorized_operations(scram_broker: EmbeddedBroker) -> None:
    # What a principal may do, as Kafka's bit fields (KIP-430), from the same rules.
    create_topic(scram_broker, "ops-t")
    olga = _scram_admin(scram_broker, "olga", "operator")
    topic = olga.describe_topics(TopicCollection(["ops-t"]),
                                  include_authorized_operations=True)["ops-t"].result(15)
    assert set(topic.authorized_operations) == {
        AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS}
    cluster = olga.describe_cluster(include_authorized_operations=True).result(15)
    assert set(cluster.authorized_operations) == {
        AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS, AclOperation.IDEMPOTENT_WRITE}
    group = olga.describe_consumer_groups(["ops-g"], include_authorized_operations=True)[
        "ops-g"].result(15)
    assert group.authorized_operations == [AclOperation.DESCRIBE]
    assert olga.describe_cluster().result(15).authorized_operations is None  # not asked
    # alice's admin on the cluster grants everything (docs/SECURITY.md).
    alice = _scram_admin(scram_broker, "alice", "wonderland")
    cluster = alice.describe_cluster(include_authorized_operations=True).result(15)
    assert AclOperation.ALTER in cluster.authorized_operations
