"""CPU and page faults per record of each process (supervisor, producer, consumer), unpaced.

    python -m bench.cpu_per_record [--size 1024] [--api batch|send] [--transport shm|socket]
                                   [--records 200000] [--rounds 3]

Wall-clock throughput on a shared machine moves with everyone else's load; the CPU seconds a
process spends per record, and its minor page faults, move much less. One producer sends
`--records` records (as `python -m bench` does: 1,000 a call with send_batch, or one a call with
send; linger_ms=2, 256 KiB batches) to one partition, one consumer reads them all; each process
reports its own user+system time and minor faults between the start signal and its last record
(the supervisor's from /proc). Figures are per round, so the spread shows.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time
from typing import Any

import psutil

from bench.peers import BATCH_BYTES


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _proc_faults(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])  # field 10, minflt


def _producer(a: argparse.Namespace, sock: str, topic: str, go: Any, out: Any) -> None:
    from edgebus import Producer

    p = Producer(socket=sock, transport=a.transport, acks="written", linger_ms=2,
                 batch_size=BATCH_BYTES, max_request_size=2 << 20, buffer_memory=64 << 20)
    chunk = [b"x" * a.size] * 1000
    go.wait()
    c0, f0 = _cpu(), _faults()
    sent = 0
    while sent < a.records:
        if a.api == "batch":
            p.send_batch(topic, chunk, partition=0)
        else:
            for v in chunk:
                p.send(topic, v, partition=0)
        sent += len(chunk)
    p.flush(120)
    out.put(("p", _cpu() - c0, _faults() - f0))
    p.close(30)


def _consumer(a: argparse.Namespace, sock: str, topic: str, ready: Any, go: Any, out: Any) -> None:
    from bench.clients import tail_consumer

    c = tail_consumer(sock, a.transport, topic)
    ready.set()
    go.wait()
    c0, f0, t0 = _cpu(), _faults(), time.monotonic()
    n = 0
    while n < a.records:
        for recs in c.poll(50, max_records=1_000_000).values():
            n += len(recs)
    out.put(("c", _cpu() - c0, _faults() - f0, time.monotonic() - t0))
    c.close()


def run(a: argparse.Namespace) -> list[dict[str, float]]:
    from edgebus import Admin
    from edgebus.testing import EmbeddedBroker

    rounds = []
    with EmbeddedBroker(log_level="WARNING") as b:
        assert b.pid is not None
        sup = psutil.Process(b.pid)
        for r in range(a.rounds):
            topic = f"cpu-{r}"
            with Admin(socket=b.socket, transport="socket") as adm:
                adm.create_topic(topic, 1, config={"max_message_bytes": 4 << 20})
            ctx = mp.get_context("fork")
            go, ready, out = ctx.Event(), ctx.Event(), ctx.Queue()
            cons = ctx.Process(target=_consumer, args=(a, b.socket, topic, ready, go, out))
            cons.start()
            ready.wait(60)
            prod = ctx.Process(target=_producer, args=(a, b.socket, topic, go, out))
            prod.start()
            time.sleep(0.5)
            t0, sf0 = sup.cpu_times(), _proc_faults(b.pid)
            go.set()
            got = {x[0]: x[1:] for x in (out.get(timeout=600), out.get(timeout=600))}
            t1, sf1 = sup.cpu_times(), _proc_faults(b.pid)
            cons.join(30)
            prod.join(30)
            k = a.records
            rounds.append({
                "supervisor_us": (t1.user + t1.system - t0.user - t0.system) * 1e6 / k,
                # the kernel's share: the log write(2)'s copy into the page cache, the fetch
                "supervisor_sys_us": (t1.system - t0.system) * 1e6 / k, "producer_us": got["p"][0] * 1e6 / k,
                "consumer_us": got["c"][0] * 1e6 / k,
                "supervisor_faults_per_k": (sf1 - sf0) * 1000 / k,
                "producer_faults_per_k": got["p"][1] * 1000 / k,
                "consumer_faults_per_k": got["c"][1] * 1000 / k,
                "records_per_s": k / got["c"][2]})
            with Admin(socket=b.socket, transport="socket") as adm:
                adm.delete_topic(topic)
    return rounds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cpu_per_record", description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--api", default="batch", choices=["batch", "send"])
    ap.add_argument("--transport", default="shm", choices=["shm", "socket"])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    rounds = run(a)

    def col(key: str, fmt: str) -> str:
        return " / ".join(format(r[key], fmt) for r in rounds)

    print(f"{a.size} B, {a.api}, {a.transport}, {a.records:,} records, {a.rounds} rounds "
          f"(EDGEBUS_HEAP_KEEP_MIB={os.environ.get('EDGEBUS_HEAP_KEEP_MIB', 'default')})")
    print(f"  CPU us/record: supervisor {col('supervisor_us', '.2f')} (of which system "
          f"{col('supervisor_sys_us', '.2f')}) | producer "
          f"{col('producer_us', '.2f')} | consumer {col('consumer_us', '.2f')}")
    print(f"  minor faults per 1,000 records: supervisor {col('supervisor_faults_per_k', '.0f')} | "
          f"producer {col('producer_faults_per_k', '.0f')} | consumer {col('consumer_faults_per_k', '.0f')}")
    print(f"  records/s (wall, noisy): {col('records_per_s', ',.0f')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
