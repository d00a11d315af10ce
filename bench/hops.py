"""Where a record's time goes at a paced rate (issue 16): per-hop one-way latency of one producer
`send()` (linger_ms=0) -> supervisor -> one consumer, on the shm and the socket path.

    python -m bench.hops [--rate 10000] [--sizes 100,1024] [--duration 3] [--rounds 1]
                         [--transports shm,socket] [--out bench/results/FILE.md]
                         [--variants 'before:client.nohold=1;after:']

--variants runs each case once per variant, alternated (reversed every other round): a name, then
environment variables for the supervisor, or `client.NAME=1` for a change in the forked producer
(CLIENT_VARIANTS: `client.nohold`, the producer before it held batches behind an unread request;
`client.hold1`, holding behind any unread request on the rings, not only two (before lat16);
EDGEBUS_HOPS_NO_WINDOW=1, the supervisor's standing fetch answering only a consumer that has
read every answer, not all but the last (before lat16);
`client.nofreeze`, the forked producer and consumer not freezing the heap they inherit, as
bench/run.py CHILD_GC_FREEZE), or `sup.nice=N` (the supervisor's threads at nice N, bench/process_knobs.py).

The library carries no trace hooks: this module wraps a few methods (producer, supervisor,
consumer) and stamps CLOCK_MONOTONIC (comparable across processes on one host) into an in-memory
list per process, written out at the end. The supervisor runs as `python -m bench.hops --serve
CONFIG` so that its methods are wrapped before it starts; the producer and consumer are forked
from this process after their methods are wrapped. The wrapping costs a few microseconds per
event: compare hops with each other, not these totals with `bench.paced`'s.

A record's hops (each record's offset is its sequence number: a fresh topic, one producer):
  held      send() called -> its batch starts to be written (held while no request could go,
            or behind a request the supervisor has not read)
  write     batch encoded and written into the request ring / socket
  sup_wake  written -> the supervisor dispatches that PRODUCE (its wake-up and loop turn)
  append    the PRODUCE's dispatch until appended and, for a fetch parked on the partition,
            answered (validate, append, answer)
  to_answer appended -> the answer carrying the record is queued for the consumer when no fetch
            was parked (the consumer's next fetch; a standing fetch held for the consumer's read)
  ring_wait queued -> in the response ring (behind answers the ring had no room for)
  cons_wake in the ring / socket -> the consumer's read returns the frame (its wake-up)
  decode    frame read -> the consumer's poll() returns the record
For the records around the p50 and the p99 of the total, each hop's median is given; a hop may
come out negative when a process was descheduled between an action and its stamp (the
supervisor dispatching a frame before the producer stamped its write). Also per case: batches,
answers to the consumer, standing answers held and resumed, answers queued behind a full ring,
and the garbage collector's runs per generation while records flowed (the forked children
inherit this process's heap, so theirs include it).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import multiprocessing as mp
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.hops_analysis import (  # noqa: F401 (the event format and kinds; analyse, render here)
    _EV,
    CF,
    CR,
    GCA,
    GCB,
    GCX,
    HOPS,
    PA,
    PB,
    PW,
    SD,
    SE,
    SF,
    SH,
    SP,
    SQ,
    SR,
    SW,
    _load,
    analyse,
    render,
)

_events: list[tuple[int, int, int, int, int]] = []
_now = time.monotonic_ns


def ev(kind: int, a: int = 0, b: int = 0, c: int = 0) -> None:
    _events.append((kind, _now(), a, b, c))


_packed: list[bytes] = []  # stamps already packed (_full_collection_cost)


def _pack() -> None:
    _packed.append(b"".join(_EV.pack(*e) for e in _events))
    _events.clear()


def dump(role: str) -> None:
    d = os.environ.get("EDGEBUS_HOPS_DIR")
    _pack()
    if not d or not any(_packed):
        return
    with open(Path(d) / f"{role}-{os.getpid()}.ev", "wb") as f:
        f.write(b"".join(_packed))
    _packed.clear()


def _gc_hook() -> None:
    t0 = [0]

    def cb(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            t0[0] = _now()
        else:
            _events.append((GCA, t0[0], info["generation"], _now() - t0[0], 0))

    gc.callbacks.append(cb)


# --- supervisor ----------------------------------------------------------------------------------
def _patch_supervisor() -> None:
    from edgebus.server import dispatch as D
    from edgebus.server.handlers import standing as S
    from edgebus.server.listeners import shm as L
    from edgebus.server.listeners import stream as ST

    orig_dispatch = D.Dispatcher.dispatch_frame

    def dispatch_frame(self: Any, conn: Any, key: int, ver: int, corr: int, body: Any) -> None:
        _events.append((SD, _now(), conn.id, key, corr))
        orig_dispatch(self, conn, key, ver, corr, body)
        _events.append((SE, _now(), conn.id, key, corr))

    D.Dispatcher.dispatch_frame = dispatch_frame  # type: ignore[method-assign,assignment]

    orig_queue = ST.Connection.queue

    def queue(self: Any, data: bytes) -> None:
        corr = int.from_bytes(bytes(data[4:8]), "little", signed=True)
        _events.append((SQ, _now(), self.id, corr, 0))
        orig_queue(self, data)

    ST.Connection.queue = queue  # type: ignore[method-assign]

    orig_link_queue = L.ShmLink.queue

    def link_queue(self: Any, data: bytes) -> bool:
        n = len(self.pending)
        r: bool = orig_link_queue(self, data)
        if len(self.pending) > n:
            _events.append((SP, _now(), self.conn.id, 0, 0))
        return r

    L.ShmLink.queue = link_queue  # type: ignore[method-assign]

    orig_flush = L.ShmLink._flush_pending

    def flush(self: Any) -> None:
        n = len(self.pending)
        orig_flush(self)
        if len(self.pending) < n:
            _events.append((SF, _now(), self.conn.id, n - len(self.pending), 0))

    L.ShmLink._flush_pending = flush  # type: ignore[method-assign]

    orig_call = L.ShmLink.__call__

    def call(self: Any, mask: int) -> None:
        _events.append((SW, _now(), self.conn.id, int(self.spinning), 0))
        orig_call(self, mask)

    L.ShmLink.__call__ = call  # type: ignore[method-assign]

    orig_may = S.StandingFetches.may_answer

    def may_answer(self: Any, w: Any) -> bool:
        r: bool = orig_may(self, w)
        if not r:
            _events.append((SH, _now(), w.conn.id, 0, 0))
        return r

    S.StandingFetches.may_answer = may_answer  # type: ignore[method-assign]

    orig_resume = S.StandingFetches.resume

    def resume(self: Any, link: Any) -> None:
        _events.append((SR, _now(), link.conn.id, 0, 0))
        orig_resume(self, link)

    S.StandingFetches.resume = resume  # type: ignore[method-assign]

    if os.environ.get("EDGEBUS_HOPS_NO_WINDOW"):
        # Variant EDGEBUS_HOPS_NO_WINDOW=1: a standing fetch answers only while its consumer has
        # read every answer (before lat16), not all but the last (handlers/standing.py caught_up).
        L.ShmLink.last_entry = property(lambda self: 0, lambda self, v: None)  # type: ignore[assignment]
        # ... and no window of unread bytes either (tail28's, 16 KiB by default): the Python
        # rule and the C plane's copy of it.
        import edgebus.server.handlers.standing as SH
        import edgebus.server.listeners.shm_plane as SP

        SH.STANDING_WINDOW = 0
        SP.STANDING_WINDOW = 0


def _full_collection_cost() -> None:
    """At the supervisor's exit: one full collection timed (CPU time of this thread: the machine's
    load does not enter) as the heap stands (frozen, when the supervisor froze its start:
    server/gcpolicy.py), then again with everything unfrozen: what a full collection during
    traffic costs with and without the freeze. The objects tracked."""
    _pack()  # the stamps as bytes: their list would be walked by the unfrozen collection only
    gc.collect()  # first the garbage
    cpu = time.thread_time_ns
    t0 = cpu()
    gc.collect()
    frozen_ns = cpu() - t0
    n = gc.get_freeze_count() + len(gc.get_objects())
    gc.unfreeze()
    t0 = cpu()
    gc.collect()
    _events.append((GCX, _now(), frozen_ns, cpu() - t0, n))


def serve(config: str) -> int:
    _patch_supervisor()
    _gc_hook()
    atexit.register(dump, "sup")
    atexit.register(_full_collection_cost)  # runs before dump (atexit: last in, first out)
    from edgebus.cli.main import main

    return main(["serve", "--config", config])


# --- clients -------------------------------------------------------------------------------------
def _patch_clients() -> None:
    from edgebus import format as F
    from edgebus.client import channel as C
    from edgebus.client import producer as P
    from edgebus.client import shm_channel as SC
    from edgebus.fastpath.fetch import fetch_response

    orig_send_batch = P.Producer._send_batch

    def send_batch(self: Any, ch: Any, b: Any) -> None:
        _events.append((PB, _now(), b.count, 0, 0))
        orig_send_batch(self, ch, b)
        _events.append((PW, _now(), b.count, 0, 0))

    P.Producer._send_batch = send_batch  # type: ignore[method-assign]

    # A linger_ms=0 send() that leaves at once goes in one step (edgebus/client/fast_send.py),
    # not through _send_batch: a batch of one record, stamped only when it was written.
    orig_send_one = P.Producer._send_one

    def send_one(self: Any, *args: Any) -> Any:
        t0 = _now()
        r = orig_send_one(self, *args)
        if r is not None:
            _events.append((PB, t0, 1, 0, 0))
            _events.append((PW, _now(), 1, 0, 0))
        return r

    P.Producer._send_one = send_one  # type: ignore[method-assign,assignment]

    orig_finish = P.Producer._finish

    def finish(self: Any, b: Any, *args: Any, **kw: Any) -> None:
        _events.append((PA, _now(), b.count, len(self._open), 0))
        orig_finish(self, b, *args, **kw)

    P.Producer._finish = finish  # type: ignore[method-assign]

    def offsets(frame: Any) -> tuple[int, int]:
        try:
            resp = fetch_response(frame)
        except Exception:
            return -1, -1
        first = last = -1
        for p in resp.partitions:
            data = p.records
            pos = 0
            while pos + F.BATCH_HEADER_SIZE <= len(data):
                base, _t, length = F.BATCH_PREFIX.unpack_from(data, pos)
                count = int.from_bytes(data[pos + F.BATCH_RECORD_COUNT: pos + F.BATCH_RECORD_COUNT
                                            + 4], "little")
                if first < 0:
                    first = base
                last = base + count - 1
                pos += length
        return first, last

    def wrap(cls: Any) -> None:
        orig = cls._frames

        def frames(self: Any, deadline: float) -> Any:
            got = orig(self, deadline)
            t = _now()
            for f in got:
                first, last = offsets(f)
                _events.append((CF, t, f.correlation_id, first, last))
            return got

        cls._frames = frames

    wrap(C.SyncChannel)
    wrap(SC.ShmSyncChannel)


_STAMP = struct.Struct("<qq")


# Client-side variants (`--variants` entries named client.NAME): applied in the forked producer.
def _no_hold(p: Any) -> None:
    p._unread = lambda: False  # never hold a batch for the supervisor's read (the old behaviour)
    # ... nor decline a one-step send (edgebus/client/fast_send.py) for it (this forked child's
    # classes only)
    from edgebus.client import shm_channel as SC
    from edgebus.client import socket_acks as SA

    for cls in (SC.ShmAsyncChannel, SA.LazySocketChannel):
        orig = cls.send_record

        def send_record(self: Any, *a: Any, _orig: Any = orig) -> Any:
            return _orig(self, *a[:-1], False)

        cls.send_record = send_record  # type: ignore[method-assign,assignment]


def _hold_one(p: Any) -> None:
    """Hold a record while the supervisor has yet to read any request (head != tail), not only
    when it is more than one request behind (before lat16): for the forked producer's rings."""
    from edgebus.client import shm_rings as SR

    orig = SR.ShmRings.__init__

    def old_tail(rings: Any) -> None:
        head, tail = rings.req_head, rings.req_tail
        rings.req_tail = lambda: -1 if head() != tail() else tail()

    def init(self: Any, *a: Any) -> None:
        orig(self, *a)
        old_tail(self)

    SR.ShmRings.__init__ = init  # type: ignore[method-assign,assignment]
    rings = getattr(p._channel, "_rings", None)  # a channel opened already
    if rings is not None:
        old_tail(rings)


CLIENT_VARIANTS = {"client.nohold": _no_hold, "client.hold1": _hold_one}


def _producer(sock: str, topic: str, transport: str, size: int, rate: int, duration: float,
              go: Any, done: Any, env: dict[str, str]) -> None:
    from bench.run import _tight_timers, child_heap
    from edgebus import Producer

    child_heap()
    _gc_hook()
    p = Producer(socket=sock, transport=transport, linger_ms=0)
    for name, fn in CLIENT_VARIANTS.items():
        if env.get(name):
            fn(p)
    pad = b"x" * (size - _STAMP.size)
    go.wait()
    _tight_timers()
    n = int(rate * duration)
    t0 = time.monotonic()
    mono_ns = time.monotonic_ns
    for k in range(n):
        delay = t0 + k / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        p.send(topic, _STAMP.pack(mono_ns(), k) + pad, partition=0)
    p.flush(60)
    p.close(30)
    dump("prod")
    done.put(n)


def _consumer(sock: str, topic: str, transport: str, ready: Any, go: Any, expected: Any,
              done: Any) -> None:
    from bench.clients import tail_consumer
    from bench.run import child_heap

    child_heap()
    _gc_hook()
    c = tail_consumer(sock, transport, topic)
    ready.put(1)
    go.wait()
    got = 0
    unpack = _STAMP.unpack_from
    hard = time.monotonic() + 120
    while time.monotonic() < hard:
        for recs in c.poll(50, max_records=1_000_000).values():
            t = _now()
            for r in recs:
                ts, seq = unpack(r.value or bytes(16))
                _events.append((CR, t, r.offset, seq, ts))
            got += len(recs)
        if 0 < expected.value <= got:
            break
    c.close()
    dump("cons")
    done.put(got)


def run_case(transport: str, size: int, rate: int, duration: float,
             env: dict[str, str] | None = None) -> dict[str, Any]:
    from edgebus import Admin
    from edgebus.testing import EmbeddedBroker

    tdir = tempfile.mkdtemp(prefix="eb-hops-")
    os.environ["EDGEBUS_HOPS_DIR"] = tdir
    broker = EmbeddedBroker(log_level="WARNING")
    broker._log_file = open(broker.log_path, "ab")  # noqa: SIM115 (EmbeddedBroker.start's way)
    broker.proc = subprocess.Popen(
        [sys.executable, "-m", "bench.hops", "--serve", str(broker.config_path)],
        stdout=broker._log_file, stderr=subprocess.STDOUT,
        env={**os.environ, **{k: v for k, v in (env or {}).items()
                              if not k.startswith(("client.", "sup."))}})
    broker.wait_ready()
    from bench import process_knobs
    from bench import run as R

    R.CHILD_GC_FREEZE = not (env or {}).get("client.nofreeze")
    if (env or {}).get("sup.nice"):
        process_knobs.renice(broker.proc.pid, int((env or {})["sup.nice"]))
    try:
        topic = f"hops-{os.getpid()}-{transport}-{size}"
        with Admin(socket=broker.socket, transport="socket") as a:
            a.create_topic(topic, 1, config={"max_message_bytes": 4 << 20})
        mpc = mp.get_context("fork")
        R.before_fork()
        ready, done, go = mpc.Queue(), mpc.Queue(), mpc.Event()
        expected = mpc.Value("q", 0)
        cons = mpc.Process(target=_consumer, args=(broker.socket, topic, transport, ready, go,
                                                   expected, done))
        cons.start()
        ready.get(timeout=60)
        prod = mpc.Process(target=_producer, args=(broker.socket, topic, transport, size, rate,
                                                   duration, go, done, env or {}))
        prod.start()
        time.sleep(0.3)
        go.set()
        prod.join(duration + 120)
        expected.value = int(rate * duration)
        cons.join(120)
    finally:
        broker.stop()
        broker.cleanup()
    try:
        return analyse(tdir, transport, size, rate)
    finally:
        if not os.environ.get("EDGEBUS_HOPS_KEEP"):  # the raw stamps, for a closer look
            shutil.rmtree(tdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        sys.exit(serve(argv[1]))
    ap = argparse.ArgumentParser(prog="python -m bench.hops", description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--sizes", default="100,1024")
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--transports", default="shm,socket")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--variants", default="",
                    help="NAME:VAR=VALUE+VAR=VALUE;... run alternately: environments of the "
                         "supervisor, or client.NAME=1 for a change in the producer (nothing after "
                         "the colon: the defaults), e.g. 'before:client.nohold=1;after:'")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    _patch_clients()
    variants: list[tuple[str, dict[str, str]]] = []
    for v in (a.variants or "default:").split(";"):
        name, _, spec = v.partition(":")
        variants.append((name, dict(kv.split("=", 1) for kv in spec.split("+") if kv)))
    results = []
    for rnd in range(a.rounds):
        for size in (int(s) for s in a.sizes.split(",")):
            cases = [(t, v) for t in a.transports.split(",") for v in variants]
            for transport, (vname, env) in (cases if rnd % 2 == 0 else cases[::-1]):
                r = run_case(transport, size, a.rate, a.duration, env)
                r["round"], r["variant"] = rnd, vname
                results.append(r)
                print(f"  {rnd} {transport:6} {vname:10} {size:5} B  p50 {r.get('p50')}  "
                      f"p99 {r.get('p99')}", flush=True)
    md = render(results, argv)
    print("\n".join(md))
    if a.out:
        Path(a.out).write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
