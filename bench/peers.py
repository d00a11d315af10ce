"""The systems under test, each as a small adapter with the same shape.

A system makes a context in the parent (`setup`), then producer and consumer objects inside child
processes (`producer(ctx, i)`, `consumer(ctx, i)`), and cleans up in the parent (`teardown`).

    producer: send(payload)          one message, the one-record API
              send_many(payloads)    many, the batch API (pipelining, batched framing, ...)
              flush(); close()
    consumer: recv(timeout_s) -> list[bytes]   whatever arrived (possibly nothing)
              close()

Topologies: `producers` -> `consumers`. With several consumers every consumer receives every
message (fan-out); with several producers one consumer receives all of them.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The bare socket and the relay floor (their old import path: peers.UnixSocket, ...).
from bench.socket_peers import SOCAT_BUFFER, SocatRelay, UnixSocket  # noqa: F401

# The edgebus producers' batch_size in throughput runs (the library default is the same, 256 KiB).
BATCH_BYTES = int(os.environ.get("EDGEBUS_BENCH_BATCH_BYTES", 256 * 1024))


@dataclass
class Ctx:
    system: str
    producers: int
    consumers: int
    latency: bool  # a fixed-rate latency run (producers use send(), no lingering)
    data: dict[str, Any] = field(default_factory=dict)


# --- edgebus -------------------------------------------------------------------------------------
class Edgebus:
    """edgebus through its public client API; transport "shm" or "socket"; api "batch" or "send".
    acks: the producer's; defaults: "producer", "consumer" or "all" use the library's defaults
    for that side instead of the benchmark's tuning (256 KiB batches, 1 MiB fetches);
    linger_ms: set it (0: no lingering)."""

    def __init__(self, transport: str, api: str, broker: Any, acks: str = "written",
                 defaults: str = "", linger_ms: float | None = None) -> None:
        self.transport = transport
        self.api = api
        self.broker = broker
        self.acks = acks
        self.defaults = defaults
        self.linger_ms = linger_ms
        self._n = 0

    def server_pid(self) -> int:
        return int(self.broker.pid)

    def setup(self, ctx: Ctx) -> None:
        from edgebus import Admin

        self._n += 1
        topic = f"bench-{os.getpid()}-{self._n}-{ctx.system.replace(' ', '_').replace('(', '').replace(')', '')}"
        with Admin(socket=self.broker.socket, transport="socket") as a:
            a.create_topic(topic, 1, config={"max_message_bytes": 4 << 20})
        ctx.data.update(socket=self.broker.socket, topic=topic, transport=self.transport,
                        acks=self.acks, defaults=self.defaults, linger_ms=self.linger_ms)

    def teardown(self, ctx: Ctx) -> None:
        from edgebus import Admin

        with Admin(socket=self.broker.socket, transport="socket") as a:
            a.delete_topic(ctx.data["topic"])

    @staticmethod
    def producer(ctx: Ctx, i: int) -> Any:
        from edgebus import Producer

        topic = ctx.data["topic"]
        acks, linger = ctx.data.get("acks", "written"), ctx.data.get("linger_ms")
        if ctx.latency or linger == 0:
            p = Producer(socket=ctx.data["socket"], transport=ctx.data["transport"], acks=acks,
                         linger_ms=0)
        elif ctx.data.get("defaults") in ("producer", "all"):
            p = Producer(socket=ctx.data["socket"], transport=ctx.data["transport"], acks=acks)
        else:
            p = Producer(socket=ctx.data["socket"], transport=ctx.data["transport"], acks=acks,
                         linger_ms=2, batch_size=BATCH_BYTES, max_request_size=2 << 20,
                         buffer_memory=64 << 20)

        class P:
            def send(self, payload: bytes) -> None:
                p.send(topic, payload, partition=0)

            def send_many(self, payloads: list[bytes]) -> None:
                p.send_batch(topic, payloads, partition=0)

            def flush(self) -> None:
                p.flush(120)

            def close(self) -> None:
                p.close(30)

        return P()

    @staticmethod
    def consumer(ctx: Ctx, i: int) -> Any:
        from bench.clients import tail_consumer

        c = tail_consumer(ctx.data["socket"], ctx.data["transport"], ctx.data["topic"],
                          tuned=ctx.data.get("defaults") not in ("consumer", "all"))

        class C:
            def recv(self, timeout: float) -> list[bytes]:
                out: list[bytes] = []
                for recs in c.poll(timeout * 1000, max_records=1_000_000).values():
                    out += [r.value for r in recs if r.value is not None]  # none is null here
                return out

            def close(self) -> None:
                c.close()

        return C()


# --- multiprocessing.Queue -----------------------------------------------------------------------
class MpQueue:
    def setup(self, ctx: Ctx) -> None:
        mpc = mp.get_context("fork")
        ctx.data["queues"] = [mpc.Queue(maxsize=100_000) for _ in range(ctx.consumers)]

    def teardown(self, ctx: Ctx) -> None:
        for q in ctx.data["queues"]:
            q.cancel_join_thread()
            q.close()

    @staticmethod
    def producer(ctx: Ctx, i: int) -> Any:
        qs = ctx.data["queues"]

        class P:
            def send(self, payload: bytes) -> None:
                for q in qs:
                    q.put(payload)

            def send_many(self, payloads: list[bytes]) -> None:
                for x in payloads:
                    for q in qs:
                        q.put(x)

            def flush(self) -> None:
                pass

            def close(self) -> None:
                for q in qs:
                    q.close()
                    q.join_thread()

        return P()

    @staticmethod
    def consumer(ctx: Ctx, i: int) -> Any:
        q = ctx.data["queues"][i]

        class C:
            def recv(self, timeout: float) -> list[bytes]:
                try:
                    out = [q.get(timeout=timeout)]
                except queue.Empty:
                    return []
                with contextlib.suppress(queue.Empty):
                    for _ in range(10_000):
                        out.append(q.get_nowait())
                return out

            def close(self) -> None:
                pass

        return C()


# --- Redis Streams -------------------------------------------------------------------------------
class RedisStreams:
    """redis-server (appendonly yes, appendfsync everysec) started here; redis-py, pipelining."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = ""
        self.port = 0
        self._n = 0

    @staticmethod
    def available() -> str | None:
        if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
            return "redis-server is not installed (./scripts/quickstart bench installs it)"
        try:
            import redis  # noqa: F401
        except ImportError:
            return "redis-py is not installed (./scripts/quickstart bench installs it)"
        return None

    def start(self) -> None:
        import redis

        self.dir = tempfile.mkdtemp(prefix="ebb-redis-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--appendonly", "yes",
             "--appendfsync", "everysec", "--save", "", "--dir", self.dir, "--daemonize", "no",
             "--logfile", os.path.join(self.dir, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = redis.Redis(port=self.port)
        for _ in range(300):
            try:
                r.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def server_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def setup(self, ctx: Ctx) -> None:
        self._n += 1
        ctx.data.update(port=self.port, key=f"bench-{self._n}")

    def teardown(self, ctx: Ctx) -> None:
        import redis

        redis.Redis(port=self.port).delete(ctx.data["key"])

    @staticmethod
    def producer(ctx: Ctx, i: int) -> Any:
        import redis

        r = redis.Redis(port=ctx.data["port"])
        key = ctx.data["key"]

        class P:
            def send(self, payload: bytes) -> None:
                r.xadd(key, {"d": payload})

            def send_many(self, payloads: list[bytes]) -> None:
                pipe = r.pipeline(transaction=False)
                for x in payloads:
                    pipe.xadd(key, {"d": x})
                pipe.execute()

            def flush(self) -> None:
                pass

            def close(self) -> None:
                r.close()

        return P()

    @staticmethod
    def consumer(ctx: Ctx, i: int) -> Any:
        import redis

        r = redis.Redis(port=ctx.data["port"])
        key = ctx.data["key"]
        last = ["0-0"]

        class C:
            def recv(self, timeout: float) -> list[bytes]:
                # Any: redis-py types xread's answer as its RESP2 and RESP3 shapes at once
                resp: Any = r.xread({key: last[0]}, count=10_000, block=max(1, int(timeout * 1000)))
                if not resp:
                    return []
                entries = resp[0][1]
                last[0] = entries[-1][0]
                return [fields[b"d"] for _id, fields in entries]

            def close(self) -> None:
                r.close()

        return C()
