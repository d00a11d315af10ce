"""edgebus benchmark: edgebus (shm and socket) against the alternatives a user would pick, in one run.

    python -m bench            # the full run (several minutes)
    python -m bench --quick    # a few seconds: 1 -> 1, 100-byte messages only
    python bench/run.py ...    # the same (the Makefile's `make bench`)

Measures, per system, message size and topology (1 -> 1, 4 -> 1, 1 -> 4 fan-out):
- throughput: producers send as fast as they can for a fixed time; msg/s and MB/s counted where
  the consumers receive (end to end; a fan-out message counts once, when all consumers have it);
- one-way latency at a fixed total rate (10,000 msg/s): each payload carries its scheduled send
  time (CLOCK_MONOTONIC, the paced loop's schedule, not the moment send() ran: a producer held up
  counts its delay in every late record, for every system alike), the consumer subtracts it from
  its receive time; p50/p99/p99.9 after a warm-up of the first 10%.
For edgebus: the supervisor's RSS and CPU seconds per million records (its own process only), and
its idle CPU with 10 idle clients connected. Writes bench/results/latest.json, latest.md and a
timestamped copy of each with --archive.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import multiprocessing as mp
import os
import platform
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from bench import cost, floor, kafka_peers, needs, peers
from bench.peers import Ctx
from bench.proc_usage import (  # noqa: F401 (their old import path: bench.run)
    _counters,
    _idle_clients,
    _idle_cpu,
    _pss,
    _server_procs,
    _thread_switches,
    cpu_seconds,
    idle_cpu,
)
from bench.run_report import _progress, find, render_md, table, targets  # noqa: F401 (as above)

RESULTS = Path(__file__).resolve().parent / "results"
RATE = 10_000  # total messages/s in latency runs
_STAMP = struct.Struct("<qq")  # send time (monotonic ns), sequence
CHUNK = 1000  # messages per send_many call and per one-record loop between clock checks


def payload(size: int, seq: int, ts: int = 0) -> bytes:
    return _STAMP.pack(ts, seq) + b"x" * (size - _STAMP.size)


def _cpu() -> float:
    # This process's CPU clock (all threads, ns resolution): os.times() counts 10 ms ticks, too
    # coarse for a few microseconds per message over a few seconds.
    return time.process_time()


# The forked producers and consumers inherit this process's heap (the harness's modules, rows,
# adapters): in a case they ran full collections of 20-57 ms over it (bench/hops.py, branch
# lat10k), a pause of the harness, not of the system measured. The parent collects before it
# forks and each child freezes what it inherited (gc.freeze: out of every later collection), for
# every system alike. False: the old behaviour, for before/after runs (bench/paced.py --variants).
CHILD_GC_FREEZE = True


def before_fork() -> None:
    """In the parent, before forking a case's children: the garbage they would otherwise inherit
    and collect."""
    if CHILD_GC_FREEZE:
        gc.collect()


def child_heap() -> None:
    """First thing in a forked child: what it inherited is permanent for it, so its collections
    scan only what it makes itself. `gc.get_freeze_count()` shows it (tests/test_bench_tail.py)."""
    if CHILD_GC_FREEZE:
        gc.freeze()


def _tight_timers() -> None:
    """Sub-100-microsecond sleeps for the fixed-rate producers (default timer slack is 50 us)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK = 1 us


# --- child processes -----------------------------------------------------------------------------
def producer_main(adapter: Any, ctx: Ctx, i: int, size: int, api: str, duration: float,
                  ready: Any, go: Any, results: Any) -> None:
    child_heap()
    try:
        p = adapter.producer(ctx, i)
        ready.put(("p", i))
        go.wait()
        cpu0 = _cpu()
        sent = 0
        if ctx.latency:
            _tight_timers()
            rate = RATE / ctx.producers
            n = int(rate * duration)
            pad = b"x" * (size - _STAMP.size)
            mono_ns = time.monotonic_ns
            step_ns = 1e9 / rate
            t0 = mono_ns()
            for k in range(n):
                # Every system's record carries its scheduled send time, not the moment send()
                # was called: a producer held up (a blocking call, a full queue, a late wake-up)
                # counts the delay in every record it made late, as a user waiting on a reading
                # sees it (no coordinated omission), and the same for every system.
                due = t0 + int(k * step_ns)
                delay = due - mono_ns()
                if delay > 0:
                    time.sleep(delay / 1e9)
                p.send(_STAMP.pack(due, k) + pad)
            sent = n
        else:
            chunk = [payload(size, k) for k in range(CHUNK)]
            deadline = time.monotonic() + duration
            if api == "batch":
                while time.monotonic() < deadline:
                    p.send_many(chunk)
                    sent += CHUNK
            else:
                send = p.send
                while time.monotonic() < deadline:
                    for x in chunk:
                        send(x)
                    sent += CHUNK
        p.flush()
        results.put(("p", i, sent, _cpu() - cpu0))
        p.close()
    except BaseException as e:
        results.put(("p", i, -1, f"{type(e).__name__}: {e}"))
        raise


def consumer_main(adapter: Any, ctx: Ctx, i: int, ready: Any, go: Any, go_ns: Any,
                  expected: Any, hard_deadline: float, results: Any) -> None:
    child_heap()
    try:
        c = adapter.consumer(ctx, i)
        ready.put(("c", i))
        go.wait()
        cpu0 = _cpu()
        count = 0
        nbytes = 0
        t_last = 0
        lat: list[int] = []
        unpack = _STAMP.unpack_from
        mono_ns = time.monotonic_ns
        while time.monotonic() < hard_deadline:
            msgs = c.recv(0.05)
            if msgs:
                now = mono_ns()
                t_last = now
                count += len(msgs)
                nbytes += sum(map(len, msgs))
                if ctx.latency:
                    lat += [now - unpack(m)[0] for m in msgs]
            exp = expected.value
            if exp > 0 and count >= exp:
                break
        results.put(("c", i, count, nbytes, t_last - go_ns.value, lat, _cpu() - cpu0))
        c.close()
    except BaseException as e:
        results.put(("c", i, -1, 0, 0, [], 0.0, f"{type(e).__name__}: {e}"))
        raise


# --- one case ------------------------------------------------------------------------------------
def pct(sorted_vals: list[int], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, int(q * len(sorted_vals)))
    return sorted_vals[k] / 1000.0  # ns -> us


def run_case(adapter: Any, system: str, api: str, size: int, producers: int, consumers: int,
             latency: bool, duration: float, supervisor: psutil.Process | None) -> dict[str, Any]:
    mpc = mp.get_context("fork")
    ctx = Ctx(system, producers, consumers, latency)
    adapter.setup(ctx)
    ready, results = mpc.Queue(), mpc.Queue()
    go = mpc.Event()
    go_ns = mpc.Value("q", 0)
    expected = mpc.Value("q", 0)
    hard = time.monotonic() + duration + 60
    before_fork()
    procs = [mpc.Process(target=consumer_main, args=(adapter, ctx, i, ready, go, go_ns, expected,
                                                     hard, results), daemon=True)
             for i in range(consumers)]
    for pr in procs:
        pr.start()
    for _ in range(consumers):  # consumers are positioned before any producer exists
        ready.get(timeout=60)
    prods = [mpc.Process(target=producer_main, args=(adapter, ctx, i, size, api, duration, ready,
                                                     go, results), daemon=True)
             for i in range(producers)]
    for pr in prods:
        pr.start()
    for _ in range(producers):
        ready.get(timeout=60)
    cpu0 = supervisor.cpu_times() if supervisor else None
    servers = _server_procs(adapter)
    server0 = _counters(servers) if servers else None
    time.sleep(0.05)
    go_ns.value = time.monotonic_ns()
    go.set()
    sent = 0
    producer_cpu = 0.0
    errors: list[str] = []
    got: list[tuple] = []
    for _ in range(producers):
        r = results.get(timeout=duration + 120)
        while r[0] == "c":  # a consumer that failed early
            got.append(r)
            r = results.get(timeout=duration + 120)
        if r[2] < 0:
            errors.append(r[3])
        else:
            sent += r[2]
            producer_cpu += r[3]
    expected.value = max(sent, 1)
    while len(got) < consumers:
        got.append(results.get(timeout=120))
    for pr in procs + prods:
        pr.join(30)
        if pr.is_alive():
            pr.kill()
    cpu1 = supervisor.cpu_times() if supervisor else None
    server1 = _counters(servers) if servers else None  # an exited relay is a zombie: still read
    adapter.teardown(ctx)
    delivered = [g[2] for g in got]
    errors += [g[7] for g in got if len(g) > 7]
    elapsed = max(g[4] for g in got) / 1e9 if got else float("nan")
    received = min(delivered) if delivered else 0
    row: dict[str, Any] = {
        "system": system, "api": api, "size": size, "topology": f"{producers}->{consumers}",
        "mode": "latency" if latency else "throughput", "sent": sent, "received": received,
        "seconds": round(elapsed, 3),
    }
    if errors:
        row["errors"] = errors[:3]
    if latency:
        lat = sorted(x for g in got for x in g[5][len(g[5]) // 10:])
        row.update(rate=RATE, p50_us=round(pct(lat, 0.50), 1), p99_us=round(pct(lat, 0.99), 1),
                   p999_us=round(pct(lat, 0.999), 1), samples=len(lat))
    else:
        mps = received / elapsed if elapsed > 0 else 0.0
        row.update(msgs_per_s=round(mps), mb_per_s=round(mps * size / 1e6, 1))
    # CPU of every process of the system (producers, consumers, server) per message sent.
    server_cpu = 0.0
    if server0 is not None and server1 is not None:
        server_cpu = server1["cpu"] - server0["cpu"]
        # How the server is woken: per message, its voluntary context switches (all threads)
        # and read/write-type system calls (/proc/PID/io), e.g. the relay's one read and one
        # write per message.
        for key in ("wakeups", "syscr", "syscw"):
            if server0[key] is not None and server1[key] is not None:
                row[f"server_{key}_per_msg"] = round((server1[key] - server0[key]) / max(sent, 1), 2)
    elif supervisor is not None and cpu0 is not None and cpu1 is not None:
        server_cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    consumer_cpu = sum(g[6] for g in got if len(g) > 6 and g[2] >= 0)
    row["cpu_us_per_msg"] = round((producer_cpu + consumer_cpu + server_cpu) / max(sent, 1) * 1e6, 1)
    # ... and each side's share (issue 16: where the time goes)
    for side, cpu_s in (("producer", producer_cpu), ("consumer", consumer_cpu), ("server", server_cpu)):
        row[f"cpu_us_{side}"] = round(cpu_s / max(sent, 1) * 1e6, 1)
    if elapsed > 0:
        row["server_cpu_percent"] = round(100 * server_cpu / elapsed, 1)
    if supervisor is not None and cpu0 is not None and cpu1 is not None:
        cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        row["supervisor_cpu_s"] = round(cpu, 3)
        row["supervisor_cpu_s_per_M"] = round(cpu / max(sent, 1) * 1e6, 2)
        row["supervisor_us_per_msg"] = round(cpu / max(sent, 1) * 1e6, 4)  # unrounded: --acl ratios
        row["supervisor_rss_mb"] = round(supervisor.memory_info().rss / 2**20, 1)
    return row


# --- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few seconds: 1->1, 100 B only")
    ap.add_argument("--duration", type=float, help="seconds per case (default 3, quick 0.5)")
    ap.add_argument("--idle-seconds", type=float, help="idle CPU window (default 60, quick 2)")
    ap.add_argument("--only", default="", help="comma-separated system names to run")
    ap.add_argument("--sizes", default="", help="comma-separated sizes (default 100,1024)")
    ap.add_argument("--topologies", default="", help="e.g. 1->1,4->1,1->4")
    ap.add_argument("--rate", type=int, default=10_000, help="total msg/s of latency runs")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--no-cost", action="store_true",
                    help="skip issue 16's section (1,000 msg/s, durable, defaults); --quick skips it")
    ap.add_argument("--cost-rounds", type=int, default=cost.ROUNDS,
                    help="alternated rounds of the cost section's paced rows (1,000 and 10,000/s, "
                         "100 B; 10,000/s, 1 KiB), its 1 KiB send_batch pair and its defaults / "
                         f"tuned pairs (default {cost.ROUNDS}): their targets are judged on medians")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--acl", action="store_true",
                    help="also run the edgebus rows against a second supervisor with access "
                         "control on (ACL_RULES, 10 rules) and report on/off ratios; the first "
                         "supervisor then has it off (acl.enabled: false)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="with --acl: run each edgebus on/off pair N times, alternating which "
                         "side runs first, and report the median on/off ratios (bench/acl_compare.py)")
    ap.add_argument("--check", action="store_true",
                    help="only say which peers are not installed (the rows they cost) and the "
                         "command that installs them (bench/needs.py); exit 1 if any")
    ap.add_argument("--acl-control", action="store_true",
                    help="with --acl: the second supervisor has access control off too (an A/A "
                         "run: its on/off ratios are the noise floor of two supervisor processes)")
    ap.add_argument("--archive", action="store_true",
                    help="also keep a timestamped copy of the report next to latest-*")
    args = ap.parse_args(argv)
    only_rows = {s for s in args.only.split(",") if s}
    if gone := needs.missing(only_rows):
        argv_again = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--check"]
        print(needs.advice(gone, argv_again), file=sys.stderr, flush=True)
    if args.check:
        if not gone:
            print(needs.advice(gone, []))
        return 1 if gone else 0
    globals()["RATE"] = args.rate  # read by the fork()ed producers and the report
    quick = args.quick
    duration = args.duration or (0.5 if quick else 3.0)
    lat_duration = args.duration or (1.0 if quick else 4.0)
    idle_s = args.idle_seconds if args.idle_seconds is not None else (2.0 if quick else 60.0)
    sizes = [int(s) for s in args.sizes.split(",") if s] or ([100] if quick else [100, 1024])
    topos = [tuple(map(int, t.split("->"))) for t in args.topologies.split(",") if t] or (
        [(1, 1)] if quick else [(1, 1), (4, 1), (1, 4)])

    from edgebus.shm import unavailable_reason
    from edgebus.testing import EmbeddedBroker

    notes: list[str] = []
    if (why := unavailable_reason()) is not None:
        notes.append(f"edgebus-shm skipped: {why}")
    broker = EmbeddedBroker(log_level="WARNING",
                            config={"acl": {"enabled": False}} if args.acl else None).start()
    sup = psutil.Process(broker.pid)
    acl_config = {"enabled": False} if args.acl_control else {"rules": ACL_RULES}
    acl_broker = EmbeddedBroker(log_level="WARNING", config={"acl": acl_config}).start() \
        if args.acl else None
    sups = {False: sup, True: psutil.Process(acl_broker.pid) if acl_broker else None}
    redis = peers.RedisStreams()
    why_redis = redis.available()
    if why_redis is None:
        redis.start()
    else:
        notes.append(f"redis-streams skipped: {why_redis}")
    # Kafka protocol: the same supervisor's Kafka listener, and Tansu (a Rust Kafka broker) as
    # the Kafka-protocol server to compare with; both driven by confluent-kafka (librdkafka).
    tansu = kafka_peers.Tansu()
    why_tansu = tansu.available()
    if why_tansu is None:
        tansu.start()
        notes.append("kafka-* rows: confluent-kafka producer (acks=1) -> broker -> confluent-kafka "
                     "consumer; 'sup CPU s/M' of kafka-tansu is the Tansu process's; client "
                     f"settings: {kafka_peers.SETTINGS}")
    else:
        notes.append(f"kafka-tansu skipped: {why_tansu}")

    # (name, api, adapter, measured): True for edgebus rows (the supervisor's CPU), a peer broker's
    # Popen (its CPU), False (none)
    systems: list[tuple[str, str, Any, Any]] = []
    # With --acl each edgebus row is followed by the same row on the ACL supervisor (alternated,
    # so that drift in the machine's load touches both alike).
    transports = (["shm"] if why is None else []) + ["socket"]
    for t in transports:
        for api in ("batch", "send"):
            systems.append((f"edgebus-{t}", api, peers.Edgebus(t, api, broker), True))
            if acl_broker is not None:
                systems.append((f"edgebus-{t}-acl", api, peers.Edgebus(t, api, acl_broker), True))
    systems += [("mp-queue", "send", peers.MpQueue(), False),
                ("unix-socket", "batch", peers.UnixSocket(), False)]
    # The relay floor (bench/floor.py): the bare socket with socat in the middle.
    relay = peers.SocatRelay()
    if (why_relay := relay.available()) is None:
        systems.append((floor.FLOOR, "batch", relay, False))
    else:
        notes.append(f"{floor.FLOOR} (the relay floor) skipped: {why_relay}")
    if why_redis is None:
        systems.append(("redis-streams", "batch", redis, False))
    systems.append(("kafka-edgebus", "send", kafka_peers.KafkaPeer(lambda: broker.kafka_bootstrap),
                    True))
    if why_tansu is None:
        systems.append(("kafka-tansu", "send", kafka_peers.KafkaPeer(tansu.bootstrap), tansu.proc))
    only = {s for s in args.only.split(",") if s}
    if only:
        systems = [s for s in systems if s[0] in only]
    from bench import acl_compare

    # (round, system): round 0 is every system once; --acl --repeat N adds N-1 alternated rounds
    # of the on/off pairs.
    plan = acl_compare.rounds(systems, args.repeat if acl_broker is not None else 1)

    rows: list[dict[str, Any]] = []
    cost_rows: list[dict[str, Any]] = []
    fsync: dict[str, Any] | None = None
    started = time.time()
    load_before = os.getloadavg()  # other work on the machine skews everything: say so
    try:
        case = 0
        for size in sizes:
            for p, c in topos:
                # kafka-tansu before kafka-edgebus in every other case (kafka_peers.alternate_brokers)
                case_plan = kafka_peers.alternate_brokers(plan, case)
                case += 1
                for rnd, (name, api, adapter, is_eb) in case_plan:
                    if not args.no_throughput:
                        rows.append(run_case(adapter, name, api, size, p, c, False, duration,
                                             _measured(is_eb, sups["-acl" in name])))
                        rows[-1]["round"] = rnd
                        _progress(rows[-1])
                for rnd, (name, api, adapter, is_eb) in case_plan:
                    # Latency: one per system, with its one-message API (edgebus: send()).
                    if args.no_latency or (is_eb is True and api != "send"):
                        continue
                    rows.append(run_case(adapter, name, "send", size, p, c, True, lat_duration,
                                         _measured(is_eb, sups["-acl" in name])))
                    rows[-1]["round"] = rnd
                    _progress(rows[-1])
        # The cost section with --only too when edgebus is among the systems asked for (its rows
        # compare against Redis Streams and the bare socket only when those are asked for too).
        if not (args.no_cost or quick) and (not only or only & {"edgebus-shm", "edgebus-socket"}):
            cost_rows, fsync = cost.run(
                run_case, lambda r: globals().__setitem__("RATE", r), broker, sup,
                redis if why_redis is None else None, why is None, duration, lat_duration, _progress,
                relay=relay if why_relay is None and (not only or floor.FLOOR in only) else None,
                rounds=args.cost_rounds)
    finally:
        broker.stop()
        broker.cleanup()
        if acl_broker is not None:
            acl_broker.stop()
            acl_broker.cleanup()
        if why_redis is None:
            redis.stop()
        tansu.stop()
    idle = idle_cpu(idle_s) if idle_s > 0 and not only else None
    wear_rows = None
    if not only and not quick:  # issue 16: SD-card wear per acks level (bench/wear.py)
        from bench import wear

        wear_rows = wear.run()

    acl_summary = acl_compare.summarize(rows) if acl_broker is not None else None
    if acl_summary is not None:
        notes += acl_compare.notes(acl_summary)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": quick,
        "seconds": round(time.time() - started, 1),
        "machine": {"cpus": os.cpu_count(), "arch": platform.machine(),
                    "python": platform.python_version(), "kernel": platform.release(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"throughput_seconds": duration, "latency_seconds": lat_duration,
                     "latency_rate": RATE, "acks": "written", "idle_seconds": idle_s},
        "notes": notes, "results": rows, "idle": idle, "targets": targets(rows, idle),
        "cost": {"results": cost_rows, "fsync": fsync,
                 "targets": cost.targets(rows + cost_rows, fsync)} if cost_rows else None,
        "wear": wear_rows, "acl": acl_summary,
    }
    md = render_md(report)
    print("\n".join(md))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # A run narrowed by --only/--sizes/--topologies/--no-* is not a full report: keep it apart.
    partial = bool(only or args.sizes or args.topologies or args.no_latency or args.no_throughput)
    tag = "partial" if partial else "quick" if quick else "full"
    names = [f"latest-{tag}"] + ([f"{stamp}-{tag}"] if args.archive else [])
    for name in names:
        (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
        (out / f"{name}.md").write_text("\n".join(md) + "\n")
    print(f"\nwrote {out}/latest-{tag}.json and .md")
    return 0


# --acl: ten rules of a gateway, one of which concerns the benchmark's own user (root), so that
# its connections take the per-connection decision cache instead of the "nothing applies" path.
ACL_RULES = [
    "deny user:root delete topic:protected.*",
    "allow user:mqtt-bridge write topic:sensors.*",
    "allow user:mqtt-bridge read topic:commands.*",
    "allow user:mqtt-bridge read group:mqtt-egress",
    "allow group:sensors read topic:sensors.*",
    "allow group:sensors read group:sensor-*",
    "allow user:replicator read topic:*",
    "allow user:* read,write topic:home.%u.*",
    "deny user:guest all topic:billing*",
    "allow node:gateway-7 all topic:gateway-7/*",
]


def _measured(is_eb: Any, sup: psutil.Process | None) -> psutil.Process | None:
    """The process whose CPU a row reports: the supervisor for edgebus rows, a peer's own broker
    process where the systems list gives one (Tansu), else none."""
    if is_eb is True:
        return sup
    if isinstance(is_eb, subprocess.Popen):
        return psutil.Process(is_eb.pid)
    return None


if __name__ == "__main__":
    sys.exit(main())
