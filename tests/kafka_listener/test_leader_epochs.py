"""Leader epochs (KIP-320) on the Kafka listener, with real clients and a real supervisor.

The truncation every test makes is real: the supervisor is SIGKILLed, the last batch of the
partition's segment is torn (its file cut in the middle of the batch, as a write cut short
leaves it), and the restart's recovery cuts it off. The records of that batch had been read
(and committed) by a consumer; the offsets they had are then given to new records. A client
that goes on from its old position would skip those new records, or, told its offset is out of
range, start over by its reset policy. With the partition's leader epoch bumped at the
restart (server/kafka/leader_epochs.py), librdkafka and kafka-python validate their positions
with OffsetForLeaderEpoch and move back to the cut: they read the new records exactly once.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from aiokafka import AIOKafkaConsumer
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import Producer as CKProducer
from confluent_kafka import TopicPartition as CKTP
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata
from kafka import TopicPartition as KPTP

from edgebus import Producer
from edgebus import format as F
from edgebus.server.kafka.codec import request_module, response_module
from edgebus.testing import EmbeddedBroker, free_port
from tests.kafka_listener.conftest import (
    connect,
    create_topic,
    parse_response,
    raw_request,
    read_frame,
)
from tests.kafka_listener.test_kafkajs import kafkajs  # noqa: F401 (the fixture)

pytestmark = pytest.mark.crash

HERE = Path(__file__).resolve().parent
OLD, NEW = 100, 60  # records before the cut; records written after the restart


def _pinned(make_broker: Callable[..., EmbeddedBroker]) -> EmbeddedBroker:
    """A supervisor whose Kafka port stays the same across restarts (a running client
    reconnects to it)."""
    return make_broker({"kafka": {"listeners": [f"127.0.0.1:{free_port()}"]}}).start()


def _produce_old(b: EmbeddedBroker, topic: str) -> None:
    """OLD records in two batches: 0..69 and 70..99 (the second is the one torn later)."""
    p = CKProducer({"bootstrap.servers": b.kafka_bootstrap, "linger.ms": 50})
    for lo, hi in ((0, 70), (70, OLD)):
        for i in range(lo, hi):
            p.produce(topic, value=b"old-%d" % i, partition=0)
        assert p.flush(30) == 0


def _tear_last_batch(b: EmbeddedBroker, topic: str) -> int:
    """Cut the partition's last segment in the middle of its last batch (the supervisor is
    down); returns that batch's base offset: the log end recovery will leave."""
    seg = sorted((Path(b.data_dir) / f"{topic}-0").glob("*.log"))[-1]
    data = seg.read_bytes()
    pos = last = 0
    base = -1
    while pos + F.BATCH_PREFIX_SIZE <= len(data):
        off, _atime, length = F.BATCH_PREFIX.unpack_from(data, pos)
        last, base = pos, off
        pos += length
    with open(seg, "r+b") as f:
        f.truncate(last + 30)  # inside the header: a torn batch
    return base


def _cut_and_restart(b: EmbeddedBroker, topic: str) -> int:
    b.kill9()
    cut = _tear_last_batch(b, topic)
    b.start()
    assert "Kafka leader epochs bumped" in b.log(), b.log()[-2000:]
    return cut


def _produce_new(b: EmbeddedBroker, topic: str) -> None:
    with Producer(socket=b.socket) as p:
        for i in range(NEW):
            p.send(topic, b"new-%d" % i, partition=0)
        p.flush()


def _poll(c: CKConsumer, want: int, timeout_s: float = 60) -> list[Any]:
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < want and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            out.append(m)
    return out


def _drain(c: CKConsumer, quiet_s: float = 3.0) -> list[Any]:
    """Whatever else the consumer still gets (nothing more is expected)."""
    out: list[Any] = []
    deadline = time.monotonic() + quiet_s
    while time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            out.append(m)
    return out


def _new_only(got: list[tuple[int, bytes]], cut: int) -> None:
    assert got == [(cut + i, b"new-%d" % i) for i in range(NEW)], got[:5]


def test_running_confluent_consumer_moves_back_to_a_cut_tail(
        make_broker: Callable[..., EmbeddedBroker]) -> None:
    """A consumer with assigned partitions (kcat -C, Quix's changelog recovery: its position
    lives in the client, not in a group) reconnects after the restart, is fenced (its metadata
    still says epoch 0), refreshes, sees epoch 1 and asks where epoch 0 ended: at the cut,
    before its position, so it seeks there. Before leader epochs it fetched at its old
    position: it got only the new records past it (skipping the others), or
    OFFSET_OUT_OF_RANGE and read everything again by its reset policy. (A subscribed consumer
    rejoins its group after a restart and starts from its committed offset: the last test.)"""
    b = _pinned(make_broker)
    create_topic(b, "ep1")
    _produce_old(b, "ep1")
    c = CKConsumer({"bootstrap.servers": b.kafka_bootstrap, "group.id": "ep1",
                    "auto.offset.reset": "earliest", "enable.auto.commit": False,
                    "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500})
    try:
        c.assign([CKTP("ep1", 0, 0)])
        first = _poll(c, OLD)
        assert [m.offset() for m in first] == list(range(OLD))
        assert {m.leader_epoch() for m in first} == {0}
        cut = _cut_and_restart(b, "ep1")
        assert 0 < cut < OLD
        _produce_new(b, "ep1")
        got = _poll(c, NEW) + _drain(c)
        _new_only([(m.offset(), m.value()) for m in got], cut)
        assert {m.leader_epoch() for m in got} == {1}  # written in the new epoch
    finally:
        c.close()


def test_running_kafka_python_consumer_moves_back_to_a_cut_tail(
        make_broker: Callable[..., EmbeddedBroker]) -> None:
    """kafka-python (3.x validates positions as the Java client does), assigned as above:
    fenced after the restart, it refreshes its metadata, sees the epoch advance past its position's and asks
    OffsetForLeaderEpoch where epoch 0 ended; it seeks to the cut."""
    b = _pinned(make_broker)
    create_topic(b, "ep2")
    _produce_old(b, "ep2")
    c = KafkaConsumer(bootstrap_servers=b.kafka_bootstrap, group_id="ep2",
                      auto_offset_reset="earliest", enable_auto_commit=False,
                      reconnect_backoff_ms=50, reconnect_backoff_max_ms=500)
    try:
        c.assign([KPTP("ep2", 0)])
        c.seek_to_beginning()
        n = 0
        deadline = time.monotonic() + 60
        while n < OLD and time.monotonic() < deadline:
            n += sum(len(v) for v in c.poll(500).values())
        assert n == OLD
        cut = _cut_and_restart(b, "ep2")
        _produce_new(b, "ep2")
        got: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + 60
        while len(got) < NEW and time.monotonic() < deadline:
            for recs in c.poll(500).values():
                got.extend((r.offset, r.value) for r in recs)
        quiet = time.monotonic() + 3
        while time.monotonic() < quiet:
            for recs in c.poll(200).values():
                got.extend((r.offset, r.value) for r in recs)
        _new_only(got, cut)
    finally:
        c.close()


def _group_read(client: str, b: EmbeddedBroker, topic: str, group: str, want: int,
                kafkajs_path: Path | None) -> list[tuple[int, bytes]]:
    """A subscribed consumer of `group` with `client`: reads `want` records from its committed
    offset (earliest without one), whatever more arrives in the next 3 s, commits, and stops."""
    boot = b.kafka_bootstrap
    got: list[tuple[int, bytes]] = []
    if client == "confluent":
        c = CKConsumer({"bootstrap.servers": boot, "group.id": group,
                        "auto.offset.reset": "earliest", "enable.auto.commit": False})
        try:
            c.subscribe([topic])
            got = [(m.offset(), m.value()) for m in _poll(c, want) + _drain(c)]
            c.commit(asynchronous=False)
        finally:
            c.close()
    elif client == "kafka-python":
        k = KafkaConsumer(topic, bootstrap_servers=boot, group_id=group,
                          auto_offset_reset="earliest", enable_auto_commit=False)
        try:
            deadline = time.monotonic() + 60
            while len(got) < want and time.monotonic() < deadline:
                for recs in k.poll(500).values():
                    got.extend((r.offset, r.value) for r in recs)
            quiet = time.monotonic() + 3
            while time.monotonic() < quiet:
                for recs in k.poll(200).values():
                    got.extend((r.offset, r.value) for r in recs)
            k.commit()
        finally:
            k.close()
    elif client == "aiokafka":
        got = asyncio.run(_aiokafka_read(boot, topic, group, want))
    else:
        assert kafkajs_path is not None
        r = subprocess.run(["node", str(HERE / "kafkajs_consume_commit.js"), boot, topic, group,
                            str(want)], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "NODE_PATH": str(kafkajs_path)})
        assert r.returncode == 0, r.stderr[-2000:]
        got = [(o, v.encode()) for o, v in json.loads(r.stdout)]
    return got


async def _aiokafka_read(boot: str, topic: str, group: str, want: int) -> list[tuple[int, bytes]]:
    c = AIOKafkaConsumer(topic, bootstrap_servers=boot, group_id=group,
                         auto_offset_reset="earliest", enable_auto_commit=False)
    await c.start()
    got: list[tuple[int, bytes]] = []
    try:
        deadline = time.monotonic() + 60
        while len(got) < want and time.monotonic() < deadline:
            for recs in (await c.getmany(timeout_ms=500)).values():
                got.extend((r.offset, r.value) for r in recs)
        quiet = time.monotonic() + 3
        while time.monotonic() < quiet:
            for recs in (await c.getmany(timeout_ms=200)).values():
                got.extend((r.offset, r.value) for r in recs)
        await c.commit()
    finally:
        await c.stop()
    return got


@pytest.fixture
def kafkajs_path(request: pytest.FixtureRequest) -> Path | None:
    """node's kafkajs (installed once, test_kafkajs.py's fixture) for the kafkajs case only."""
    if request.node.callspec.params["client"] != "kafkajs":
        return None
    return cast(Path, request.getfixturevalue("kafkajs"))


@pytest.mark.parametrize("client", ["confluent", "kafka-python", "aiokafka", "kafkajs"])
def test_restarted_group_consumer_resumes_at_a_cut_tail(
        make_broker: Callable[..., EmbeddedBroker], client: str,
        kafkajs_path: Path | None) -> None:
    """A group's commit past a tail that recovery cut is moved back to the cut at start
    (groups/offsets.py), so a consumer of every client, restarted, reads the new records from
    there. Before, it resumed at the old commit: offsets from it on only (librdkafka does not
    validate a committed offset; aiokafka and kafkajs have no leader epochs)."""
    b = _pinned(make_broker)
    topic = "ep3" + client.replace("-", "")
    create_topic(b, topic)
    _produce_old(b, topic)
    assert len(_group_read(client, b, topic, "g", OLD, kafkajs_path)) == OLD
    cut = _cut_and_restart(b, topic)
    _produce_new(b, topic)
    _new_only(_group_read(client, b, topic, "g", NEW, kafkajs_path), cut)
    assert "recovery cut the partition's tail" in b.log()


def test_committed_leader_epoch_kept_across_a_restart(
        make_broker: Callable[..., EmbeddedBroker]) -> None:
    """The epoch a client commits with its offset is stored with it (OffsetCommit v6+) and
    given back by OffsetFetch, after a restart too; a commit without one answers none, and so
    does one at epoch 0 (stored as version 0, which an older edgebus still reads: FORMAT.md)."""
    b = _pinned(make_broker)
    create_topic(b, "ep4", partitions=3)
    conf = {"bootstrap.servers": b.kafka_bootstrap, "group.id": "ep4",
            "enable.auto.commit": False}
    c = CKConsumer(conf)
    try:
        c.commit(offsets=[CKTP("ep4", 0, 7, leader_epoch=3), CKTP("ep4", 1, 5),
                          CKTP("ep4", 2, 4, leader_epoch=0)], asynchronous=False)
    finally:
        c.close()
    b.restart()
    c = CKConsumer(conf)
    try:
        got = c.committed([CKTP("ep4", 0), CKTP("ep4", 1), CKTP("ep4", 2)], timeout=30)
    finally:
        c.close()
    assert [(t.offset, t.leader_epoch) for t in got] == [(7, 3), (5, None), (4, None)]
    kc = KafkaConsumer(bootstrap_servers=b.kafka_bootstrap, group_id="ep4",
                       enable_auto_commit=False)
    try:
        om = kc.committed(KPTP("ep4", 0), metadata=True)
    finally:
        kc.close()
    assert (om.offset, om.leader_epoch) == (7, 3)


def test_transactional_commit_keeps_the_leader_epoch(
        make_broker: Callable[..., EmbeddedBroker]) -> None:
    """TxnOffsetCommit (v2+) carries the leader epoch as OffsetCommit does: it is stored when the
    transaction commits and given back by OffsetFetch, after a restart too (before: dropped,
    answered as none). Epoch 0 stays none (offsets value version 0). librdkafka and
    kafka-python each commit in a transaction."""
    b = _pinned(make_broker)
    create_topic(b, "ep8", partitions=2)
    tp = CKProducer({"bootstrap.servers": b.kafka_bootstrap, "transactional.id": "ep8-ck"})
    tp.init_transactions(30)
    c = CKConsumer({"bootstrap.servers": b.kafka_bootstrap, "group.id": "ep8",
                    "enable.auto.commit": False})
    try:
        tp.begin_transaction()
        tp.send_offsets_to_transaction([CKTP("ep8", 0, 7, leader_epoch=3),
                                        CKTP("ep8", 1, 5, leader_epoch=0)],
                                       c.consumer_group_metadata(), 30)
        tp.commit_transaction(30)
    finally:
        c.close()
    kp = KafkaProducer(bootstrap_servers=b.kafka_bootstrap, transactional_id="ep8-kp")
    try:
        kp.init_transactions()
        kp.begin_transaction()
        kp.send_offsets_to_transaction({KPTP("ep8", 0): OffsetAndMetadata(9, "", 4)}, "ep8-k")
        kp.commit_transaction()
    finally:
        kp.close()
    b.restart()
    got = {}
    for group in ("ep8", "ep8-k"):
        c = CKConsumer({"bootstrap.servers": b.kafka_bootstrap, "group.id": group,
                        "enable.auto.commit": False})
        try:
            got[group] = [(t.offset, t.leader_epoch) for t in c.committed(
                [CKTP("ep8", 0), CKTP("ep8", 1)], timeout=30)]
        finally:
            c.close()
    assert got == {"ep8": [(7, 3), (5, None)], "ep8-k": [(9, 4), (-1001, None)]}


# --- the protocol, byte by byte ---------------------------------------------------------------

def _ask(b: EmbeddedBroker, api: int, version: int, body: Any, name: str) -> Any:
    with connect(b) as s:
        s.sendall(raw_request(api, version, 9, body))
        frame = read_frame(s)
    assert frame, "the listener closed the connection"
    cls = getattr(response_module(api, version), name)
    return parse_response(frame, cls, flexible_header=cls.__flexible__)[1]


def _epoch_query(b: EmbeddedBroker, version: int, topic: str,
                 parts: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """OffsetForLeaderEpoch: (partition, current epoch, epoch) -> (error, epoch, end offset)."""
    req = request_module(23, version)
    body = req.OffsetForLeaderEpochRequest(**({"replica_id": -1} if version >= 3 else {}), topics=(
        req.OffsetForLeaderTopic(topic=topic, partitions=tuple(
            req.OffsetForLeaderPartition(partition=p, current_leader_epoch=cur, leader_epoch=e)
            for p, cur, e in parts)),))
    resp = _ask(b, 23, version, body, "OffsetForLeaderEpochResponse")
    return [(int(p.error_code), p.leader_epoch, p.end_offset) for p in resp.topics[0].partitions]


def _metadata_epochs(b: EmbeddedBroker, topic: str) -> list[int]:
    req = request_module(3, 12)
    body = req.MetadataRequest(topics=(req.MetadataRequestTopic(name=topic, topic_id=None),),
                               allow_auto_topic_creation=False,
                               include_topic_authorized_operations=False)
    resp = _ask(b, 3, 12, body, "MetadataResponse")
    return [p.leader_epoch for p in resp.topics[0].partitions]


def _fetch_epochs(b: EmbeddedBroker, topic: str, current: int) -> tuple[int, list[tuple[int, int]]]:
    """Fetch v12 from offset 0 with `current` as the current leader epoch: (error, [(base
    offset, partition leader epoch) of each batch])."""
    req = request_module(1, 12)
    body = req.FetchRequest(
        replica_id=-1, max_wait=datetime.timedelta(0), min_bytes=0,
        max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1, topics=(
            req.FetchTopic(topic=topic, partitions=(
                req.FetchPartition(partition=0, current_leader_epoch=current, fetch_offset=0,
                                   last_fetched_epoch=-1, log_start_offset=-1,
                                   partition_max_bytes=1 << 20),)),),
        forgotten_topics_data=(), rack_id="")
    resp = _ask(b, 1, 12, body, "FetchResponse")
    p = resp.responses[0].partitions[0]
    records = bytes(p.records or b"")
    out = []
    pos = 0
    while pos + 12 <= len(records):
        base = int.from_bytes(records[pos:pos + 8], "big")
        length = int.from_bytes(records[pos + 8:pos + 12], "big")
        out.append((base, int.from_bytes(records[pos + 12:pos + 16], "big", signed=True)))
        pos += 12 + length
    return int(p.error_code), out


@pytest.mark.parametrize("version", [2, 3, 4])
def test_offset_for_leader_epoch_before_and_after_a_cut(
        make_broker: Callable[..., EmbeddedBroker], version: int) -> None:
    b = _pinned(make_broker)
    create_topic(b, f"ep5v{version}")
    topic = f"ep5v{version}"
    _produce_old(b, topic)
    # Never bumped: epoch 0 runs to the log end; a later epoch is unknown (-1, -1).
    assert _epoch_query(b, version, topic, [(0, 0, 0), (0, -1, 1), (7, -1, 0)]) == [
        (0, 0, OLD), (0, -1, -1), (3, -1, -1)]  # 3: UNKNOWN_TOPIC_OR_PARTITION
    assert _metadata_epochs(b, topic) == [0]
    cut = _cut_and_restart(b, topic)
    _produce_new(b, topic)
    assert _metadata_epochs(b, topic) == [1]
    assert _epoch_query(b, version, topic, [(0, 1, 0), (0, 1, 1), (0, -1, 2), (0, 0, 0),
                                            (0, 5, 0)]) == [
        (0, 0, cut), (0, 1, cut + NEW), (0, -1, -1),
        (74, -1, -1),  # FENCED_LEADER_EPOCH: the client's metadata is older than the bump
        (0, 0, cut)]  # a larger current epoch (a deleted topic's) is answered, not refused
    err, batches = _fetch_epochs(b, topic, current=0)
    assert err == 74  # fenced: the client refreshes its metadata, then validates
    err, batches = _fetch_epochs(b, topic, current=1)
    assert err == 0
    assert [e for base, e in batches if base < cut] and all(
        e == (0 if base < cut else 1) for base, e in batches), batches
    assert _fetch_epochs(b, topic, current=-1)[0] == 0  # no epoch given: not checked


def _list_offsets(b: EmbeddedBroker, version: int, topic: str,
                  currents: list[int]) -> list[tuple[int, int, int]]:
    """ListOffsets LATEST of partition 0, once per current leader epoch: (error, offset,
    leader epoch) each."""
    req = request_module(2, version)
    body = req.ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=(req.ListOffsetsTopic(
        name=topic, partitions=tuple(req.ListOffsetsPartition(
            partition_index=0, current_leader_epoch=cur, timestamp=-1) for cur in currents)),),
        **({"timeout": datetime.timedelta(seconds=1)} if version >= 10 else {}))
    resp = _ask(b, 2, version, body, "ListOffsetsResponse")
    return [(int(p.error_code), p.offset, p.leader_epoch) for p in resp.topics[0].partitions]


@pytest.mark.parametrize("version", [4, 7, 10])
def test_list_offsets_fences_an_older_current_epoch(
        make_broker: Callable[..., EmbeddedBroker], version: int) -> None:
    """ListOffsets v4+ with a current leader epoch older than the partition's is answered
    FENCED_LEADER_EPOCH, as Kafka (Partition.localLogWithEpochOrThrow) and as Fetch here
    (before: answered, from a log the client's epoch no longer describes). None given (-1)
    is not checked; a larger one is served, as by Fetch (docs/KAFKA.md)."""
    topic = f"ep9v{version}"
    b = _pinned(make_broker)
    create_topic(b, topic)
    _produce_old(b, topic)
    assert _list_offsets(b, version, topic, [0, -1]) == [(0, OLD, 0), (0, OLD, 0)]
    cut = _cut_and_restart(b, topic)
    assert _list_offsets(b, version, topic, [0, 1, -1, 5]) == [
        (74, -1, -1), (0, cut, 1), (0, cut, 1), (0, cut, 1)]


def test_a_start_with_kafka_off_bumps_the_epochs_too(
        make_broker: Callable[..., EmbeddedBroker]) -> None:
    """The machine went down, and the next run has the Kafka listener off: the epochs are bumped
    at that start all the same, so the run after it, with Kafka on, fences a client that read
    the lost tail (before: nothing was bumped, and the Kafka run answered epoch 0)."""
    b = _pinned(make_broker)
    create_topic(b, "ep7", partitions=2)
    _produce_old(b, "ep7")
    b.kill9()
    (Path(b.data_dir) / "running").write_text(str(uuid.uuid4()) + "\n")
    cfg = yaml.safe_load(b.config_path.read_text())
    b.config_path.write_text(yaml.safe_dump({**cfg, "kafka": {**cfg["kafka"], "enabled": False}}))
    b.start()
    b.stop()
    b.config_path.write_text(yaml.safe_dump(cfg))
    b.start()
    assert _metadata_epochs(b, "ep7") == [1, 1]


def test_machine_down_bumps_every_partition_and_is_kept(
        make_broker: Callable[..., EmbeddedBroker]) -> None:
    """After the machine went down (the run marker holds another boot's id) every partition's
    epoch is bumped at its log end, with nothing cut; the history survives clean restarts."""
    b = _pinned(make_broker)
    create_topic(b, "ep6", partitions=2)
    _produce_old(b, "ep6")
    b.kill9()
    (Path(b.data_dir) / "running").write_text(str(uuid.uuid4()) + "\n")
    b.start()
    assert _metadata_epochs(b, "ep6") == [1, 1]
    b.restart()  # clean: nothing more is bumped
    assert _metadata_epochs(b, "ep6") == [1, 1]
    assert _epoch_query(b, 4, "ep6", [(0, 1, 0), (1, 1, 0)]) == [(0, 0, OLD), (0, 0, 0)]
    text = (Path(b.data_dir) / "kafka-leader-epochs").read_text()
    assert text.startswith("edgebus-kafka-leader-epochs 1\n2\n"), text
    assert os.path.getsize(Path(b.data_dir) / "kafka-leader-epochs") < 4096
