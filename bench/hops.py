"""Where a record's time goes at a paced rate (issue 16): per-hop one-way latency of one producer
`send()` (linger_ms=0) -> supervisor -> one consumer, on the shm and the socket path, with the
Python paths of the producer, the supervisor and the consumer (below: not the defaults).

    python -m bench.hops [--rate 10000] [--sizes 100,1024] [--duration 3] [--rounds 1]
                         [--transports shm,socket] [--out bench/results/FILE.md]
                         [--variants 'before:client.nohold=1;after:']

The paths measured: the library carries no trace hooks, so this module wraps a few Python methods
(producer, supervisor, consumer) and stamps CLOCK_MONOTONIC (comparable across processes on one
host) into an in-memory list per process, written out at the end. By default a record now goes
by C all the way (the C send, the supervisor's C data plane and parked loop, the consumer's C
take), past none of those methods: each case therefore runs with them off (SUPERVISOR_PYTHON,
CLIENTS_PYTHON: EDGEBUS_SHM_C_PLANE=0, EDGEBUS_PRODUCER_C_SEND=0, EDGEBUS_CONSUMER_C_TAKE=0, ...),
the paths a record takes when the C modules are not built or decline it. The default paths'
latency is split from outside by bench/tail_where.py. A case whose stamps account for fewer than
90% of the records its consumer received stops the run with an error naming the stamps that
fell short (hops_analysis.check_measured), rather than printing hops of nothing.

--variants runs each case once per variant, alternated (reversed every other round): a name, then
environment variables for the supervisor, or `client.NAME=1` for a change in the forked producer
(CLIENT_VARIANTS: `client.nohold`, the producer before it held batches behind an unread request;
EDGEBUS_HOPS_NO_WINDOW=1, the supervisor's standing fetch answering only a consumer that has
read every answer, not all but the last (before lat16);
`client.nofreeze`, the forked producer and consumer not freezing the heap they inherit, as
bench/run.py CHILD_GC_FREEZE), or `sup.nice=N` (the supervisor's threads at nice N,
bench/process_knobs.py). (`client.hold1` is gone: it replaced a ring method the C send made
obsolete.)

The supervisor runs as `python bench/hops_record.py --serve CONFIG` so that its methods are
wrapped before it starts; the producer and consumer (bench/paced_pair.py) wrap theirs when forked. The
wrapping costs a few microseconds per event: compare hops with each other, not these totals with
`bench.paced`'s.

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
import os
import shutil
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
    NothingMeasured,
    _load,
    analyse,
    check_measured,
    render,
)
from bench.hops_record import _events, _gc_hook, _now, dump
from bench.paced_pair import (
    STAMP,
    PacedPair,
    new_topic,
    paced_child,
    stamped_polls,
    wrapped_supervisor,
)

# The paths this benchmark can stamp: the Python ones. By default a record goes by the C send
# (edgebus/onestep.c), the supervisor's C data plane and parked loop (shm_plane.py, park.c) and
# the consumer's C take (quick_take.py), which call none of the methods wrapped here; stamping
# inside them would put probes on the product's hot path. bench/tail_where.py splits the default
# paths' latency from outside (send() called and returned, parked waits, poll() returned).
SUPERVISOR_PYTHON = {"EDGEBUS_SHM_C_PLANE": "0", "EDGEBUS_SOCKET_C_PLANE": "0",
                     "EDGEBUS_SHM_C_PARK": "0"}
CLIENTS_PYTHON = {"EDGEBUS_PRODUCER_C_SEND": "0", "EDGEBUS_CONSUMER_C_TAKE": "0"}

# --- clients -------------------------------------------------------------------------------------
def _patch_producer() -> None:
    """In the forked producer (its classes only)."""
    from edgebus.client import producer as P

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


def _patch_consumer() -> None:
    """In the forked consumer (its classes only: the producer's acknowledgements are read by the
    same methods)."""
    from edgebus import format as F
    from edgebus.client import channel as C
    from edgebus.client import shm_rings as RINGS
    from edgebus.fastpath.fetch import fetch_response

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

    def stamp(got: Any) -> Any:
        t = _now()
        for f in got:
            first, last = offsets(f)
            _events.append((CF, t, f.correlation_id, first, last))
        return got

    # Each frame read once: a ring's frames come from ShmRings.read (the channel's standing-fetch
    # wait calls it directly, not _frames), a socket's from SyncChannel._frames (ShmSyncChannel's
    # _frames on a socket calls it: wrapping both stamped its frames twice, and the answers were
    # then matched to the wrong frames).
    orig_read = RINGS.ShmRings.read

    def read(self: Any, *a: Any, **kw: Any) -> Any:
        return stamp(orig_read(self, *a, **kw))

    RINGS.ShmRings.read = read  # type: ignore[method-assign]
    orig_frames = C.SyncChannel._frames

    def frames(self: Any, deadline: float) -> Any:
        return stamp(orig_frames(self, deadline))

    C.SyncChannel._frames = frames  # type: ignore[method-assign]


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


# (client.hold1, holding a record while the supervisor had any request unread, is gone: it
# replaced ShmRings.req_tail, which the rings no longer have; the C send reads the ring itself.)
CLIENT_VARIANTS = {"client.nohold": _no_hold}


def _producer(sock: str, transport: str, topic: str, rate: int, n: int, ready: Any, go: Any,
              done: Any, results: Any, size: int, env: dict[str, str]) -> None:
    from bench.run import child_heap
    from edgebus import Producer

    child_heap()
    _gc_hook()
    _patch_producer()
    p = Producer(socket=sock, transport=transport, linger_ms=0)
    for name, fn in CLIENT_VARIANTS.items():
        if env.get(name):
            fn(p)
    pad = b"x" * (size - STAMP.size)
    mono_ns = time.monotonic_ns
    for k, _due in paced_child(n, rate, ready, go):
        # the time send() is called, not the schedule's: `held` starts there
        p.send(topic, STAMP.pack(mono_ns(), k) + pad, partition=0)
    p.flush(60)
    p.close(30)
    dump("prod")
    results.put(("p", n))


def _consumer(sock: str, transport: str, topic: str, n: int, ready: Any, go: Any, done: Any,
              results: Any) -> None:
    _gc_hook()
    _patch_consumer()
    unpack = STAMP.unpack_from
    for _t0, t, recs in stamped_polls(sock, transport, topic, n, ready, go, results):
        for r in recs:
            ts, seq = unpack(r.value or bytes(16))
            _events.append((CR, t, r.offset, seq, ts))
    dump("cons")  # (read after the parent has joined this process)


def run_case(transport: str, size: int, rate: int, duration: float,
             env: dict[str, str] | None = None) -> dict[str, Any]:
    from bench import process_knobs
    from bench import run as R

    env = env or {}
    tdir = tempfile.mkdtemp(prefix="eb-hops-")
    os.environ["EDGEBUS_HOPS_DIR"] = tdir
    broker = wrapped_supervisor(str(Path(__file__).with_name("hops_record.py")), {**SUPERVISOR_PYTHON, **{
        k: v for k, v in env.items() if not k.startswith(("client.", "sup."))}})
    R.CHILD_GC_FREEZE = not env.get("client.nofreeze")
    if env.get("sup.nice"):
        assert broker.proc is not None
        process_knobs.renice(broker.proc.pid, int(env["sup.nice"]))
    n = int(rate * duration)
    try:
        topic = new_topic(broker.socket, f"hops-{transport}-{size}", max_message_bytes=4 << 20)
        R.before_fork()
        with PacedPair(broker.socket, transport, topic, rate, n, consumer=_consumer,
                       producer=_producer, producer_extra=(size, env)) as pair:
            got = pair.run(duration + 180)
    finally:
        broker.stop()
        broker.cleanup()
    try:
        r = analyse(tdir, transport, size, rate)
        r["received"] = got["c"][1]
        return r
    finally:
        if not os.environ.get("EDGEBUS_HOPS_KEEP"):  # the raw stamps, for a closer look
            shutil.rmtree(tdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
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
    # Before edgebus is imported here: the forked clients inherit these modules as they are.
    os.environ.update(CLIENTS_PYTHON)
    from edgebus.client import c_send, quick_take

    if c_send.AVAILABLE or quick_take.AVAILABLE:
        sys.exit(f"bench.hops: the clients' C paths were imported on before {CLIENTS_PYTHON} "
                 "could turn them off; run it as its own process (python -m bench.hops)")
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
                try:
                    check_measured(r)
                except NothingMeasured as e:
                    sys.exit(f"bench.hops: {transport}, {size} B, variant {vname}: {e}")
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
