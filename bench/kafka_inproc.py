"""Where a Kafka request's Python goes: the listener's request path driven in-process, profiled.

    python -m bench.kafka_inproc [--requests 5000] [--records 1] [--fetch] [--profile]

An in-process Broker with its Kafka listener (as bench/request_inproc.py does for the native
socket) and KafkaConnections over loopback TCP; this process stands in for a librdkafka
producer: it writes a Produce v9 request (one Kafka batch of `--records` 100-byte records,
acks=1) and calls the connection's selector callback, which reads, dispatches, converts,
appends and answers. With `--fetch` a caught-up consumer's Fetch v12 is parked on a second
connection before each produce and answered by its append. Prints this thread's CPU time per
request (the supervisor's calls only) and cProfile's functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import selectors
import socket
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from kafka.record.default_records import DefaultRecordBatchBuilder

from edgebus.config_listeners import KafkaSettings
from edgebus.log.manager import LogManager
from edgebus.log.topic_config import TopicConfig
from edgebus.server.broker import Broker
from edgebus.server.kafka.codec import build, request_module

TOPIC = "kin"


def _frame(api_key: int, version: int, corr: int, body: Any) -> bytes:
    from kio.serial import entity_writer

    buf = io.BytesIO()
    buf.write(struct.pack(">hhih", api_key, version, corr, 6) + b"rdkafk" + b"\x00")
    entity_writer(type(body))(buf, body)
    payload = buf.getvalue()
    return struct.pack(">i", len(payload)) + payload


def produce_frame(corr: int, records: int) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                  batch_size=1 << 24)
    for i in range(records):
        b.append(i, timestamp=1_700_000_000_000, key=None, value=b"x" * 100, headers=[])
    mod = request_module(0, 9)
    req = build(mod.ProduceRequest, transactional_id=None, acks=1, timeout=30000,
                topic_data=(build(mod.TopicProduceData, name=TOPIC, partition_data=(
                    build(mod.PartitionProduceData, index=0, records=bytes(b.build())),)),))
    return _frame(0, 9, corr, req)


def fetch_frame(corr: int, offset: int) -> bytes:
    mod = request_module(1, 12)
    req = build(mod.FetchRequest, replica_id=-1, max_wait=500, min_bytes=1, max_bytes=1 << 20,
                isolation_level=0, session_id=0, session_epoch=-1,
                topics=(build(mod.FetchTopic, topic=TOPIC, partitions=(
                    build(mod.FetchPartition, partition=0, fetch_offset=offset,
                          partition_max_bytes=1 << 20, log_start_offset=-1,
                          current_leader_epoch=-1),)),),
                forgotten_topics_data=(), rack_id="")
    return _frame(1, 12, corr, req)


class Rig:
    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="ebki-")
        root = Path(self.dir.name)
        self.logs = LogManager(root / "data")
        self.logs.open()
        self.logs.create_topic(TOPIC, TopicConfig(partitions=1))
        self.b = Broker(self.logs, root / "s.sock",
                        kafka=KafkaSettings(listeners=("127.0.0.1:0",)))
        self.listener = self.b.kafka_listeners[0]
        self.socks: list[socket.socket] = []
        self.buf = bytearray(1 << 22)

    def conn(self) -> tuple[Any, socket.socket]:
        from edgebus.server.listeners.kafka import KafkaConnection

        # A loopback TCP pair, as a Kafka client's (the kernel's TCP work is in the count).
        with socket.create_server(("127.0.0.1", 0)) as srv:
            peer = socket.create_connection(srv.getsockname())
            a, _ = srv.accept()
        for sk in (a, peer):
            sk.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        a.setblocking(False)
        self.socks += [a, peer]
        c = KafkaConnection(a, self.b.loop, self.listener)
        c.id = len(self.socks)
        self.b.loop.conns[c.id] = c
        self.b.loop.sel.register(a, selectors.EVENT_READ, c.on_event)
        return c, peer

    def read(self, peer: socket.socket) -> bytes:
        n = peer.recv_into(self.buf)
        return bytes(self.buf[:n])


def run(requests: int, records: int, fetch: bool, profile: bool) -> tuple[float, str]:
    rig = Rig()
    prod, prod_peer = rig.conn()
    cons = cons_peer = None
    if fetch:
        cons, cons_peer = rig.conn()
    frames = [produce_frame(k, records) for k in range(min(requests, 50))]
    offset = 0
    spent = 0
    prof = cProfile.Profile() if profile else None
    for k in range(requests + 50):  # the first 50 warm up (imports, first-use paths)
        if cons is not None and cons_peer is not None:
            cons_peer.sendall(fetch_frame(k, offset))
            t0 = time.thread_time_ns()
            if prof is not None and k >= 50:
                prof.enable()
            cons.on_event(selectors.EVENT_READ)  # parked: nothing at its offset yet
            if prof is not None:
                prof.disable()
            if k >= 50:
                spent += time.thread_time_ns() - t0
        prod_peer.sendall(frames[k % len(frames)])
        t0 = time.thread_time_ns()
        if prof is not None and k >= 50:
            prof.enable()
        prod.on_event(selectors.EVENT_READ)
        if prof is not None:
            prof.disable()
        if k >= 50:
            spent += time.thread_time_ns() - t0
        if not rig.read(prod_peer):
            raise RuntimeError("no produce answer")
        if cons_peer is not None:
            if not rig.read(cons_peer):
                raise RuntimeError("no fetch answer")
            offset += records
    out = ""
    if prof is not None:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(30)
        out = s.getvalue()
    for sk in rig.socks:
        sk.close()
    rig.logs.close()
    rig.dir.cleanup()
    return spent / 1e3 / requests, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--records", type=int, default=1)
    ap.add_argument("--fetch", action="store_true")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    us, prof = run(args.requests, args.records, args.fetch, args.profile)
    print(f"{us:.1f} us of supervisor CPU per request ({args.records} record(s), "
          f"{'with' if args.fetch else 'without'} a parked fetch answered)")
    if prof:
        print(prof)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
