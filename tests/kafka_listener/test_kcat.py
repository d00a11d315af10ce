"""kcat (Debian's package, its own older librdkafka) against the Kafka listener: -L, -P, and
-C -o beginning -e, reading what the native producer wrote and the reverse."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from edgebus import Consumer, Producer, TopicPartition
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("kcat") is None,
                                 reason="kcat is not installed (./scripts/quickstart setup test installs it as root)")]


def kcat(broker: EmbeddedBroker, *args: str, stdin: str | None = None) -> str:
    r = subprocess.run(["kcat", "-b", broker.kafka_bootstrap, *args], input=stdin, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_kcat_list_produce_consume(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "kc", partitions=2)
    meta = kcat(kbroker, "-L")
    assert 'topic "kc" with 2 partitions' in meta and "broker 0 at" in meta
    kcat(kbroker, "-P", "-t", "kc", "-p", "0", "-K", ":", stdin="a:1\nb:2\nc:3\n")
    out = kcat(kbroker, "-C", "-t", "kc", "-p", "0", "-o", "beginning", "-e", "-f", "%k=%s@%o\\n")
    assert out.splitlines() == ["a=1@0", "b=2@1", "c=3@2"]
    with Consumer(socket=kbroker.socket, auto_offset_reset="earliest", enable_auto_commit=False) as c:
        c.assign([TopicPartition("kc", 0)])
        got = []
        while len(got) < 3:
            for recs in c.poll(2000).values():
                got.extend((r.key, r.value) for r in recs)
    assert got == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]


def test_kcat_reads_native_records_with_headers(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "nat")
    with Producer(socket=kbroker.socket) as p:
        for i in range(5):
            p.send("nat", b"value %d" % i, key=b"k%d" % i, headers=[("src", b"native")], partition=0)
        p.flush()
    out = kcat(kbroker, "-C", "-t", "nat", "-o", "beginning", "-e", "-f", "%k|%s|%h\\n")
    assert out.splitlines() == [f"k{i}|value {i}|src=native" for i in range(5)]
