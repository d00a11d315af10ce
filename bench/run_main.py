"""`python -m bench`'s main (bench/run.py's docstring says what it measures): its options, the
supervisors and peer brokers it starts, the plan of cases (bench.run.run_case each), and the
report it prints and writes to bench/results/. The settings the forked children read (RATE) stay
module globals of bench.run, which this sets there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from bench import cost, floor, kafka_peers, needs, peers
from bench import run as R
from bench.proc_usage import idle_cpu
from bench.run_report import _progress, render_md, targets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=(R.__doc__ or "").split("\n")[0])
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
    ap.add_argument("--out", default=str(R.RESULTS))
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
    R.RATE = args.rate  # read by the fork()ed producers and the report
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
    acl_config = {"enabled": False} if args.acl_control else {"rules": R.ACL_RULES}
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
                        rows.append(R.run_case(adapter, name, api, size, p, c, False, duration,
                                             _measured(is_eb, sups["-acl" in name])))
                        rows[-1]["round"] = rnd
                        _progress(rows[-1])
                for rnd, (name, api, adapter, is_eb) in case_plan:
                    # Latency: one per system, with its one-message API (edgebus: send()).
                    if args.no_latency or (is_eb is True and api != "send"):
                        continue
                    rows.append(R.run_case(adapter, name, "send", size, p, c, True, lat_duration,
                                         _measured(is_eb, sups["-acl" in name])))
                    rows[-1]["round"] = rnd
                    _progress(rows[-1])
        # The cost section with --only too when edgebus is among the systems asked for (its rows
        # compare against Redis Streams and the bare socket only when those are asked for too).
        if not (args.no_cost or quick) and (not only or only & {"edgebus-shm", "edgebus-socket"}):
            cost_rows, fsync = cost.run(
                R.run_case, lambda r: setattr(R, "RATE", r), broker, sup,
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
                     "latency_rate": R.RATE, "acks": "written", "idle_seconds": idle_s},
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


def _measured(is_eb: Any, sup: psutil.Process | None) -> psutil.Process | None:
    """The process whose CPU a row reports: the supervisor for edgebus rows, a peer's own broker
    process where the systems list gives one (Tansu), else none."""
    if is_eb is True:
        return sup
    if isinstance(is_eb, subprocess.Popen):
        return psutil.Process(is_eb.pid)
    return None
