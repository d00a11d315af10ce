"""Where a paced run's slowest messages wait (issue 16's p99 at 10,000 msg/s), with the C data
plane, the parked loop and the C producer and consumer as they run by default (bench/hops.py
stamps Python methods those paths no longer call).

    python -m bench.tail_where [--rate 10000] [--sizes 100,1024] [--duration 4] [--rounds 1]
                               [--transport shm] [--variants 'a:;b:VAR=1'] [--out FILE.md]

One supervisor per case, started as `python -m bench.tail_where --serve CONFIG` so that its
Python is wrapped before it runs: each parked wait (shm_park.Park.wait) is stamped on entry and
return with why it returned and the links it handed to Python by reason (park.c's to_py
counters, read before and after), each standing fetch held for its consumer's read and resumed
(handlers/standing.py), each sync-back's index-entry writes (their CPU time), each timer's tick
and each garbage collection. The
producer (bench/run.py's paced loop, `send()` with linger_ms=0) stamps each record's scheduled
time, and when its send() began and returned; the consumer (bench/clients.py tail_consumer)
stamps when each record came out of poll(). CLOCK_MONOTONIC is the same clock in the three
processes.

A record's one-way latency (scheduled time -> out of poll(), as bench/run.py measures it) is split
into `late` (scheduled -> send() began: the producer's own schedule slipping), `send` (send()'s
own time) and `transit` (send() returned -> out of poll(): the supervisor and the consumer). For
the records at or above the p99 (after bench/run.py's 10% warm-up), each is put in the first
class that holds: `late` or `send` the larger part; the supervisor in Python (between two parked
waits, with the reasons of the return before) for more than half its transit; a collection in
any process overlapping it; else `transit, parked`: the supervisor parked in C all along (the
wake-ups of the consumer or the supervisor themselves). The counts, not the wall-clock figures,
are what a loaded machine moves little.
"""

from __future__ import annotations

import argparse
import atexit
import multiprocessing as mp
import os
import pickle
import shutil
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
TREE = HERE.parents[1]

# Run in another tree (main's docstring), this file measures that tree's edgebus; the
# benchmark's own modules are still this checkout's (the other's bench/ may be older or lack
# them: bench/paced_pair.py), and, run alone as a script, found here.
sys.path.append(str(TREE))
import bench  # noqa: E402

if bench.__path__[0] != str(HERE.parent):
    bench.__path__.insert(0, str(HERE.parent))

from bench.paced_pair import (  # noqa: E402
    STAMP,
    PacedPair,
    gc_spans,
    new_topic,
    paced_child,
    stamped_polls,
    wrapped_supervisor,
)
from bench.tail_analysis import _TO_PY, HEAD, analyse, render_row  # noqa: E402

_now = time.monotonic_ns
_events: dict[str, list[Any]] = {"park": [], "gc": [], "hold": [], "resume": [], "index": [],
                                 "tick": [], "after": []}


def _dump(role: str) -> None:
    d = os.environ.get("EDGEBUS_TAIL_DIR")
    if d:
        with open(Path(d) / f"{role}.pkl", "wb") as f:
            pickle.dump(_events, f)


def _gc_hook() -> None:
    gc_spans(lambda t0, t1, gen: _events["gc"].append((t0, t1, gen)))


# --- supervisor ----------------------------------------------------------------------------------
def _patch_supervisor() -> None:
    from edgebus.server.handlers import standing as S
    from edgebus.server.listeners import plane_sync as PS
    from edgebus.server.listeners import shm_park as K

    park, hold, resume, index = (_events[k] for k in ("park", "hold", "resume", "index"))
    ring_why: dict[int, int] = {}
    _events["ring_why"] = ring_why  # type: ignore[assignment]
    orig_wait = K.Park.wait

    def wait(self: Any, deadline: float) -> Any:
        t = self.P.to_py
        before = tuple(t[i] for i in range(len(_TO_PY)))
        t0 = _now()
        r = orig_wait(self, deadline)
        t1 = _now()
        after = tuple(t[i] for i in range(len(_TO_PY)))
        handed = tuple(a - b for a, b in zip(after, before, strict=True))
        if handed[2]:  # "ring": the plane call's why (plane.c EB_PLANE_*: 1 padding, 12, 13)
            ring_why[int(self.P.call.why)] = ring_why.get(int(self.P.call.why), 0) + 1
        park.append((t0, t1, int(self.P.why), handed))
        return r

    K.Park.wait = wait  # type: ignore[method-assign]
    orig_after = K.Park._after
    after_ev = _events["after"]

    def after_(self: Any) -> None:  # the sync-back (inside wait's stamps)
        t0 = _now()
        orig_after(self)
        after_ev.append((t0, _now()))

    K.Park._after = after_  # type: ignore[method-assign]
    from edgebus.server import loop as LP

    ticks = _events["tick"]

    def tick(self: Any, now: float) -> None:  # Loop._tick, each service's tick timed
        for s in self._timed:
            d = s.next_deadline()
            if d is not None and d <= now:
                t0 = _now()
                s.tick(now)
                ticks.append((t0, _now(), type(s).__name__))
        self._static_stale = True

    LP.Loop._tick = tick  # type: ignore[method-assign]
    orig_may = S.StandingFetches.may_answer

    def may_answer(self: Any, w: Any) -> bool:
        r: bool = orig_may(self, w)
        if not r:
            hold.append(_now())
        return r

    S.StandingFetches.may_answer = may_answer  # type: ignore[method-assign]
    orig_resume = S.StandingFetches.resume

    def resume_(self: Any, link: Any) -> None:
        resume.append(_now())
        orig_resume(self, link)

    S.StandingFetches.resume = resume_  # type: ignore[method-assign]
    orig_index = getattr(PS, "_index_entries", None)  # (an older tree: none)
    if orig_index is None:
        return

    cpu = time.thread_time_ns

    def index_entries(g: Any, seg: Any, c: Any, *ffi: Any) -> None:
        # (CPU time of the loop thread: a loaded machine's descheduling left out)
        n, t0 = int(c.ix_n), cpu()
        orig_index(g, seg, c, *ffi)
        index.append((t0, cpu(), n))

    PS._index_entries = index_entries  # type: ignore[assignment]


def serve(config: str) -> int:
    _patch_supervisor()
    _gc_hook()
    atexit.register(_dump, "sup")
    from edgebus.cli.main import main

    return main(["serve", "--config", config])


# --- clients -------------------------------------------------------------------------------------
def _producer(sock: str, transport: str, topic: str, rate: int, n: int, ready: Any, go: Any,
              done: Any, results: Any, size: int) -> None:
    from bench import peers
    from bench.run import Ctx, child_heap

    child_heap()
    _gc_hook()
    ctx = Ctx("edgebus", 1, 1, True)
    ctx.data.update(socket=sock, topic=topic, transport=transport, acks="written", linger_ms=0)
    p = peers.Edgebus.producer(ctx, 0)
    due_a, t0_a, t1_a = array("q", bytes(8 * n)), array("q", bytes(8 * n)), array("q", bytes(8 * n))
    pad = b"x" * (size - STAMP.size)
    mono_ns = time.monotonic_ns
    for k, due in paced_child(n, rate, ready, go):  # bench/run.py producer_main's loop, stamped
        s = mono_ns()
        p.send(STAMP.pack(due, k) + pad)
        due_a[k], t0_a[k], t1_a[k] = due, s, mono_ns()
    p.flush()
    p.close()
    _events["send"] = [due_a.tobytes(), t0_a.tobytes(), t1_a.tobytes()]
    _dump("prod")
    results.put(("p", n))


def _consumer(sock: str, transport: str, topic: str, n: int, ready: Any, go: Any, done: Any,
              results: Any) -> None:
    _gc_hook()
    recv = array("q")
    seqs = array("q")
    polls = array("q")  # (poll called, poll returned, records) per poll that returned records
    unpack = STAMP.unpack_from
    for t0, t, recs in stamped_polls(sock, transport, topic, n, ready, go, results):
        for r in recs:
            seqs.append(unpack(r.value or bytes(16))[1])
            recv.append(t)
        polls.extend((t0, t, len(recs)))
    _events["recv"] = [seqs.tobytes(), recv.tobytes(), polls.tobytes()]
    _dump("cons")  # (read after the parent has joined this process)


def _preload(sock: str, mb: int) -> None:
    """What `python -m bench`'s throughput cases leave before its paced rounds: `mb` MB of 1 KiB
    records written through the same supervisor with send_batch, then their topic deleted."""
    from edgebus import Admin, Producer

    with Admin(socket=sock, transport="socket") as a:
        a.create_topic("preload", 1, config={"max_message_bytes": 4 << 20})
        chunk = [b"p" * 1024] * 256
        with Producer(socket=sock, linger_ms=2, batch_size=256 << 10, max_request_size=2 << 20,
                      buffer_memory=64 << 20) as p:
            for _ in range(mb * 1024 // len(chunk)):
                p.send_batch("preload", chunk, partition=0)
            p.flush(120)
        a.delete_topic("preload")


def run_case(transport: str, size: int, rate: int, duration: float,
             env: dict[str, str], preload_mb: int = 0) -> dict[str, Any]:
    from bench import run as R

    tdir = tempfile.mkdtemp(prefix="eb-tail-")
    os.environ["EDGEBUS_TAIL_DIR"] = tdir
    broker = wrapped_supervisor(str(HERE), env)
    if preload_mb:  # in a child of its own, as python -m bench's cases run
        pre = mp.get_context("fork").Process(target=_preload, args=(broker.socket, preload_mb))
        pre.start()
        pre.join(600)
    load = os.getloadavg()[0]
    try:
        topic = new_topic(broker.socket, f"tail-{transport}-{size}", max_message_bytes=4 << 20)
        R.before_fork()
        with PacedPair(broker.socket, transport, topic, rate, int(rate * duration),
                       consumer=_consumer, producer=_producer, producer_extra=(size,)) as pair:
            try:
                pair.run(duration + 180)
            except RuntimeError:
                print(f"the consumer or the producer failed; the supervisor's log:\n"
                      f"{broker.log()[-4000:]}", file=sys.stderr)
                raise
    finally:
        broker.stop()
        broker.cleanup()
    try:
        out = analyse(tdir)
        out.update(transport=transport, size=size, rate=rate, load=load)
        return out
    finally:
        if not os.environ.get("EDGEBUS_TAIL_KEEP"):
            shutil.rmtree(tdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Also run as a file in another tree (an A/B): `cd OTHER && PYTHONPATH=. .venv/bin/python
    THIS_TREE/bench/tail_where.py ...` (its supervisor is this file too, run by path)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        sys.exit(serve(argv[1]))
    ap = argparse.ArgumentParser(prog="python -m bench.tail_where",
                                 description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--sizes", default="100,1024")
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--transport", default="shm")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--variants", default="", help="NAME:VAR=VALUE+VAR=VALUE;... alternated: "
                    "environments of the supervisor, or preload_mb=N (nothing after the colon: "
                    "as is)")
    ap.add_argument("--preload-mb", type=int, default=0, help="MB written with send_batch through "
                    "the case's supervisor (topic then deleted) before the paced records, as the "
                    "throughput cases do before python -m bench's paced rounds")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    variants: list[tuple[str, dict[str, str]]] = []
    for v in (a.variants or "default:").split(";"):
        name, _, spec = v.partition(":")
        variants.append((name, dict(kv.split("=", 1) for kv in spec.split("+") if kv)))
    rows = []
    print("\n".join(HEAD), flush=True)
    for rnd in range(a.rounds):
        cases = [(s, v) for s in (int(x) for x in a.sizes.split(",")) for v in variants]
        for size, (vname, spec) in (cases if rnd % 2 == 0 else cases[::-1]):
            # a variant's preload_mb=N is --preload-mb's; the rest is the supervisor's environment
            preload = int(spec.get("preload_mb", a.preload_mb))
            env = {k: v for k, v in spec.items() if k != "preload_mb"}
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)  # (the supervisor's; the clients were imported already)
            try:
                r = run_case(a.transport, size, a.rate, a.duration, env, preload)
            finally:
                for k, old in saved.items():
                    if old is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = old
            if not r["records"] or r["received"] < r["sent"]:  # a table of nothing, or of part
                sys.exit(f"bench.tail_where: {size} B, variant {vname}: the consumer received "
                         f"{r['received']} of the {r['sent']} records sent; nothing to report")
            r["round"], r["variant"] = rnd, vname
            rows.append(r)
            print(render_row(r), flush=True)
    md = [f"# Where the slow messages wait, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}", "",
          f"`python -m bench.tail_where {' '.join(argv)}`; {a.transport}, {a.rate}/s; load "
          "average at each case's start in its row.", "", *HEAD, *(render_row(r) for r in rows)]
    if a.out:
        Path(a.out).write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
