"""bench.replication's NATS part: the replicator's NATS JetStream target against NATS's own
leaf-to-hub stream sourcing (the peer to beat), on the same 3-node hub cluster set-up.

- target catch-up: a backlog of records on the edgebus source, then the replicator (connected
  and stopped while the backlog was written) ships it into an R3 stream on the hub; records/s
  until the stream holds them all; CPU of the replicator, the source and the hub nodes.
- sourcing catch-up: the same records in an R1 stream on a leaf nats-server (JetStream domain
  "leaf", a leafnode connection to every hub node); then an R3 stream on the hub is made with
  the leaf stream as its source; records/s until it holds them all; CPU of the leaf and the hub.
- catch-up rates count from the first poll (every 10 ms) that sees records at the hub to the
  one that sees them all, so making the stream or connecting is left out for both.
- lag at a steady rate: each value carries its send time (the wall clock; one host); an ordered
  push consumer on the hub stream records the hub's store time of each message (JetStream's
  timestamp) minus the send time, so the Python consumer's own speed is not in the figure.
  edgebus: `send()` to the source; sourcing: a core publish to the leaf's stream subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from bench.replication_harness import (
    cpu,
    kill,
    paced,
    quantiles,
    start_replicator,
    sync_backlog,
    write_backlog,
)
from edgebus import Admin, Producer
from edgebus.testing import EmbeddedBroker
from tests.replication.nats_cluster import PASSWORD, USER, NatsCluster, NatsNode, leaf_node

NODE = "bench-src"
_TS = struct.Struct("<q")


async def _connect(url: str | list[str]) -> Any:
    import nats

    return await nats.connect(url, user=USER, password=PASSWORD, connect_timeout=5)


async def _api(nc: Any, subject: str, body: dict[str, Any]) -> dict[str, Any]:
    for _ in range(100):
        r = await nc.request(subject, json.dumps(body).encode(), timeout=5)
        d = dict(json.loads(r.data))
        if "error" not in d or d["error"].get("code") != 503:
            return d
        await asyncio.sleep(0.1)
    return d


def _count(url: str, stream: str) -> int:
    async def go() -> int:
        nc = await _connect(url)
        try:
            d = await _api(nc, f"$JS.API.STREAM.INFO.{stream}", {})
            return int(d["state"]["messages"]) if "state" in d else -1
        finally:
            await nc.close()

    return asyncio.run(go())


def _flow(count: Any, want: int, timeout: float = 300.0) -> tuple[float, int]:
    """(seconds, records) from the first poll that saw records arrive at the hub to the one
    that saw them all: start-up (a stream made, a consumer set up) is left out for both peers."""
    deadline = time.monotonic() + timeout
    first: tuple[float, int] | None = None
    while True:
        n = count()
        now = time.perf_counter()
        if first is None and n > 0:
            first = (now, n)
        if n >= want and first is not None:
            return now - first[0], want - first[1]
        if time.monotonic() > deadline:
            raise RuntimeError("bench.replication_nats: timed out")
        time.sleep(0.01)


def _wait(cond: Any, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError("bench.replication_nats: timed out")
        time.sleep(0.02)


class Hub:
    def __init__(self, root: Path, leaf: bool = False) -> None:
        self.cluster = NatsCluster(root / "hub", leafnodes=leaf).start()
        self.leaf: NatsNode | None = None
        if leaf:
            try:
                self.leaf = leaf_node(root, self.cluster)
                self.leaf.start()
                self.cluster.wait_ready()
                deadline = time.monotonic() + 30
                while ("JetStream using domains" not in self.leaf.log()
                       and time.monotonic() < deadline):
                    time.sleep(0.05)
            except BaseException:
                self.close()
                raise

    def pids(self) -> list[int]:
        return [n.proc.pid for n in self.cluster.nodes if n.proc is not None]

    def close(self) -> None:
        self.cluster.close()
        if self.leaf is not None:
            self.leaf.kill9()


def _replicator_setup(root: Path, hub: Hub) -> tuple[EmbeddedBroker, subprocess.Popen[bytes]]:
    src = EmbeddedBroker(root / "src").start()
    pw = root / "pw"
    pw.write_text(PASSWORD)
    pw.chmod(0o600)
    cfg = root / "replicator.yaml"
    cfg.write_text(yaml.safe_dump({"node": NODE, "source": {"socket": src.socket}, "links": [{
        "name": "bench", "target": "nats", "servers": hub.cluster.urls, "stream": "EDGE",
        "user": USER, "password_file": str(pw), "topics": ["b*"]}]}))
    with Admin(socket=src.socket) as a:
        a.create_topic("b", 1)
    rep = start_replicator(cfg)
    _wait(lambda: _count(hub.cluster.urls[0], "EDGE") >= 0)  # made when the link is up
    return src, rep


def target_catch_up(root: Path, size: int, records: int) -> dict[str, Any]:
    hub = Hub(root)
    src, rep = None, None
    try:
        src, rep = _replicator_setup(root, hub)
        time.sleep(0.5)
        os.kill(rep.pid, signal.SIGSTOP)
        write_backlog(src.socket, "b", [b"x" * size] * 1000, records)
        sync_backlog(src.socket, "b")  # on disk before the clock, as after a link cut
        pids = [rep.pid, src.pid or 0, *hub.pids()]
        cpu0 = cpu(*pids)
        os.kill(rep.pid, signal.SIGCONT)
        secs, moved = _flow(lambda: _count(hub.cluster.urls[0], "EDGE"), records)
        return {"peer": "edgebus replicator -> NATS R3", "size": size, "records": records,
                "seconds": secs, "records_per_s": moved / secs,
                "cpu_s_per_million": (cpu(*pids) - cpu0) / records * 1e6}
    finally:
        kill(rep)
        if src is not None:
            src.cleanup()
        hub.close()


def sourcing_catch_up(root: Path, size: int, records: int) -> dict[str, Any]:
    hub = Hub(root, leaf=True)
    try:
        assert hub.leaf is not None
        leaf_url = hub.leaf.url

        async def fill() -> None:
            nc = await _connect(leaf_url)
            try:
                await _api(nc, "$JS.API.STREAM.CREATE.LEAF", {
                    "name": "LEAF", "subjects": ["leaf.b"], "storage": "file", "num_replicas": 1})
                js = nc.jetstream()
                for _ in range(records // 1000):  # acknowledged, 1000 in flight
                    await asyncio.gather(*(js.publish("leaf.b", b"x" * size) for _ in range(1000)))
            finally:
                await nc.close()

        asyncio.run(fill())
        want = _count(leaf_url, "LEAF")
        assert want == records // 1000 * 1000, want
        pids = [hub.leaf.proc.pid if hub.leaf.proc else 0, *hub.pids()]
        cpu0 = cpu(*pids)

        async def source() -> None:
            nc = await _connect(hub.cluster.urls[0])
            try:
                await _api(nc, "$JS.API.STREAM.CREATE.HUB", {
                    "name": "HUB", "storage": "file", "num_replicas": 3,
                    "sources": [{"name": "LEAF", "external": {"api": "$JS.leaf.API"}}]})
            finally:
                await nc.close()

        asyncio.run(source())
        secs, moved = _flow(lambda: _count(hub.cluster.urls[0], "HUB"), want)
        return {"peer": "NATS leaf stream sourced into R3 hub", "size": size, "records": want,
                "seconds": secs, "records_per_s": moved / secs,
                "cpu_s_per_million": (cpu(*pids) - cpu0) / want * 1e6}
    finally:
        hub.close()


def _consume(url: str, stream: str, n: int, out: list[float], ready: threading.Event,
             seconds: float) -> None:
    """An ordered push consumer on the hub stream: stored at the hub minus sent, per message."""
    async def go() -> None:
        nc = await _connect(url)
        js = nc.jetstream()
        done = asyncio.Event()

        async def on(m: Any) -> None:
            stored = m.metadata.timestamp.timestamp() * 1e9
            out.append((stored - _TS.unpack_from(m.data)[0]) / 1e6)
            if len(out) >= n:
                done.set()

        sub = await js.subscribe(">", stream=stream, cb=on, ordered_consumer=True)
        ready.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done.wait(), seconds + 30)
        await sub.unsubscribe()
        await nc.close()

    asyncio.run(go())


def _start_consumer(url: str, stream: str, n: int, seconds: float) -> tuple[threading.Thread,
                                                                          list[float]]:
    """_consume in a thread, subscribed when this returns; the lags it records, as they come."""
    got: list[float] = []
    ready = threading.Event()
    t = threading.Thread(target=_consume, args=(url, stream, n, got, ready, seconds), daemon=True)
    t.start()
    ready.wait(30)
    return t, got


def target_lag(root: Path, size: int, rate: int, seconds: float) -> dict[str, Any]:
    hub = Hub(root)
    src, rep = None, None
    try:
        src, rep = _replicator_setup(root, hub)
        n = int(rate * seconds)
        t, got = _start_consumer(hub.cluster.urls[1], "EDGE", n, seconds)
        pad = b"x" * (size - _TS.size)
        pids = {"replicator": [rep.pid], "src": [src.pid or 0], "hub": hub.pids()}
        cpu0 = {k: cpu(*v) for k, v in pids.items()}
        with Producer(socket=src.socket, linger_ms=0) as p:
            paced(n, rate, lambda i: p.send("b", _TS.pack(time.time_ns()) + pad, partition=0))
            p.flush()
        t.join(seconds + 40)
        q = quantiles(got)
        return {"peer": "edgebus replicator -> NATS R3", "size": size, "rate": rate, "sent": n,
                "received": len(got), "lag_p50_ms": q[49], "lag_p99_ms": q[98],
                "cpu_us_per_record": {k: (cpu(*v) - cpu0[k]) / n * 1e6 for k, v in pids.items()}}
    finally:
        kill(rep)
        if src is not None:
            src.cleanup()
        hub.close()


def sourcing_lag(root: Path, size: int, rate: int, seconds: float) -> dict[str, Any]:
    hub = Hub(root, leaf=True)
    try:
        assert hub.leaf is not None
        leaf_url = hub.leaf.url

        async def setup() -> None:
            lc, hc = await _connect(leaf_url), await _connect(hub.cluster.urls[0])
            try:
                await _api(lc, "$JS.API.STREAM.CREATE.LEAF", {
                    "name": "LEAF", "subjects": ["leaf.b"], "storage": "file", "num_replicas": 1})
                await _api(hc, "$JS.API.STREAM.CREATE.HUB", {
                    "name": "HUB", "storage": "file", "num_replicas": 3,
                    "sources": [{"name": "LEAF", "external": {"api": "$JS.leaf.API"}}]})
            finally:
                await lc.close()
                await hc.close()

        asyncio.run(setup())
        n = int(rate * seconds)
        t, got = _start_consumer(hub.cluster.urls[1], "HUB", n, seconds)
        pad = b"x" * (size - _TS.size)
        pids = {"leaf": [hub.leaf.proc.pid if hub.leaf.proc else 0], "hub": hub.pids()}
        cpu0 = {k: cpu(*v) for k, v in pids.items()}

        async def send() -> None:
            nc = await _connect(leaf_url)
            try:
                start = time.monotonic()
                for i in range(n):
                    delay = start + i / rate - time.monotonic()
                    if delay > 0:
                        await nc.flush()
                        await asyncio.sleep(delay)
                    await nc.publish("leaf.b", _TS.pack(time.time_ns()) + pad)
                await nc.flush()
            finally:
                await nc.close()

        asyncio.run(send())
        t.join(seconds + 40)
        q = quantiles(got)
        return {"peer": "NATS leaf stream sourced into R3 hub", "size": size, "rate": rate,
                "sent": n, "received": len(got), "lag_p50_ms": q[49], "lag_p99_ms": q[98],
                "cpu_us_per_record": {k: (cpu(*v) - cpu0[k]) / n * 1e6 for k, v in pids.items()}}
    finally:
        hub.close()


def run(root: Path, records: int, rate: int, seconds: float) -> list[dict[str, Any]]:
    """Both peers for both sizes, alternated (target, sourcing) so that load changes on this
    shared machine hit both alike; printed as they come."""
    rows: list[dict[str, Any]] = []
    for i, size in enumerate((100, 1024)):
        n = records if size == 100 else records // 4
        pair = [target_catch_up(root / f"nt{i}", size, n), sourcing_catch_up(root / f"ns{i}", size, n)]
        pair[0]["vs_nats_sourcing"] = pair[1]["records_per_s"] / pair[0]["records_per_s"]
        for r in pair:
            print(f"NATS catch-up {size:5d} B, {r['peer']:38}: {r['records_per_s']:10,.0f} rec/s; "
                  f"CPU s per M records {r['cpu_s_per_million']:.2f}")
        print(f"  -> NATS sourcing is {pair[0]['vs_nats_sourcing']:.2f}x the replicator's rate")
        lags = [target_lag(root / f"lt{i}", size, rate, seconds),
                sourcing_lag(root / f"ls{i}", size, rate, seconds)]
        for r in lags:
            print(f"NATS lag at {rate:,}/s, {size} B, {r['peer']:38}: p50 {r['lag_p50_ms']:.1f} ms, "
                  f"p99 {r['lag_p99_ms']:.1f} ms ({r['received']}/{r['sent']} received); CPU us "
                  "per record: " + ", ".join(f"{k} {v:.0f}" for k, v in r["cpu_us_per_record"].items()))
        rows += pair + lags
    return rows
