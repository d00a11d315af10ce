"""Access control's end-to-end cost as instructions, not time (issue 15's 3 % bound): the
supervisor runs under valgrind's callgrind, which counts every instruction it executes, whatever
the neighbours on the machine do.

    python -m bench.acl_instructions [--records 5000] [--batches 500] [--batch 100]

Three supervisors, each under `valgrind --tool=callgrind`: A with access control off, B with the
ten rules of `bench.run.ACL_RULES` (one concerns the benchmark's user, so its requests take the
cached-decision path), and A2 off again, the A/A control whose ratio to A is the method's noise
floor. Each gets the same fixed work, one phase at a time, counted between a `callgrind_control
--zero` and a `--dump`: per transport (socket, shm) and API, a producer sends `records` 100-byte
records, one request per record waiting for each acknowledgement (`send`), or `batches` batches
of `batch` records waiting for each (`batch`); then a consumer reads them all in 16 KiB fetches.
Each connection's first SETUP_REQUESTS requests (or first poll) are counted apart.

What turns with wall time rather than with requests is turned off: shm spinning, the load
check, lazy acknowledgements and the standing fetch (environment knobs: the consumer, on the
rings or the socket, then sends a FETCH per answer, checked as a standing fetch's re-arm is), and the
housekeeping timers (flush, checkpoint, retention, cleaner, disk check: an hour apart). Each
request waits until the supervisor's loop sleeps in epoll_wait, so that none is read by a loop
turn still busy with the last; PYTHONHASHSEED=0 makes hashing the same in every run.

Then, under callgrind as well, the access checks alone in one process (`--micro`): instructions
per PRODUCE through the dispatcher's fast path with the ten rules minus the same with access
control off, and per FETCH check. CPython 3.11 runs Python functions inside its one C
interpreter function, so callgrind's per-function counts cannot name Python functions
(edgebus/acl, edgebus/server/acl) in the supervisor's profile: the micro counts times the
requests of a phase are the access-control share; B - A is the same thing measured end to end.

Writes bench/results/acl-instructions.json (bench/results/acl-instructions.md explains a run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Reading callgrind (their old import path: bench.acl_instructions.dumps, ...).
from bench.callgrind import callgrind_control, dumps, self_counts, valgrind_missing
from bench.run import ACL_RULES

RESULTS = Path(__file__).resolve().parent / "results"
PAYLOAD = b"x" * 100
HOUR_MS = 3_600_000
# What counts per unit of wall time instead of per request, turned off (edgebus/tuning.py).
ENV = {
    "PYTHONHASHSEED": "0",
    "EDGEBUS_SHM_SPIN_US": "0",
    "EDGEBUS_SHM_SERVER_SPIN_US": "0",
    "EDGEBUS_SHM_SPIN_GAP_US": "0",
    "EDGEBUS_SHM_CPU_CHECK": "0",
    "EDGEBUS_SHM_ACK_LAZY_US": "0",
    # A standing fetch is pushed while the consumer has read every answer, and looked at again
    # on a 2 ms timer when not: how many answers it makes depends on timing. Off, the consumer
    # (rings or socket) sends one FETCH per answer, ahead of its poll, and each is checked as the
    # standing fetch's re-arm would be (the same check, edgebus/server/acl/checks.py `fetch`).
    "EDGEBUS_SHM_STANDING_FETCH": "0",
}
# The timers of housekeeping (flush, checkpoint, retention), the cleaner and the disk guard.
QUIET = {
    "log": {"flush_interval_ms": HOUR_MS, "checkpoint_interval_ms": HOUR_MS,
            "retention_check_interval_ms": HOUR_MS, "cleaner_interval_ms": HOUR_MS},
    "disk": {"check_interval_ms": HOUR_MS},
}
SIDES = {"A": {"enabled": False}, "B": {"rules": ACL_RULES}, "A2": {"enabled": False}}
# The first requests of each connection are counted apart (its handshake, its principals and first
# decisions are a cost per connection, not per request).
SETUP_REQUESTS = 10
# A consumer's fetches are the unit of its checks: 16 KiB per fetch makes many of them (about
# 100 one-record batches or one 100-record batch each) instead of a few of 1 MiB.
FETCH_BYTES = 16384  # fetch_max_bytes and max_partition_fetch_bytes
CASES = [(t, api) for t in ("socket", "shm") for api in ("send", "batch")]


def wait_idle(pid: int) -> None:
    """Until the supervisor's loop sleeps in epoll_wait. Each request then starts from the same
    state: otherwise whether a request arrives while the loop still runs (and is read at once)
    or after it went to sleep (and wakes it) depends on timing, and the shared-memory path's
    instructions with it (a wake-up, the ring's waiting flag, a re-check)."""
    task = Path(f"/proc/{pid}/task/{pid}")
    while True:
        wchan = (task / "wchan").read_text()
        state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        if "epoll" in wchan and state == "S":
            return
        time.sleep(0.0002)


def _conn_requests(broker: Any) -> int:
    """The requests of the busiest client connection (the producer's or consumer's)."""
    from edgebus import Admin

    with Admin(socket=broker.socket, transport="socket") as a:
        return max(int(c["requests"]) for c in a.status()["clients"])


def _phase(broker: Any, label: str, open_client: Callable[[], Any],
           work: Callable[[Any, bool], None]) -> dict[str, int]:
    """Zero, work(client, True) (the connection's first requests: handshake, principals, the
    first decisions), dump as `label-setup`; zero, work(client, False) (the steady part), dump
    as `label`. The connection's requests after each part, as the supervisor counted them (the
    Admin connection that asks is closed and its end handled before the next zero)."""
    client = open_client()
    counts = {}
    try:
        for first, name in ((True, f"{label}-setup"), (False, label)):
            wait_idle(broker.pid)
            callgrind_control(broker.pid, "--zero")
            work(client, first)
            wait_idle(broker.pid)  # the last answer's loop turn, to its end
            callgrind_control(broker.pid, f"--dump={name}")
            counts["setup_requests" if first else "requests"] = _conn_requests(broker)
            time.sleep(0.2)  # the Admin connection's end reaches the loop, then wait_idle
        return counts
    finally:
        client.close()


def run_side(side: str, out_dir: Path, records: int, batches: int, batch: int
             ) -> dict[str, Any]:
    from edgebus import Admin, Consumer, Producer, TopicPartition
    from edgebus.testing import EmbeddedBroker

    prefix = out_dir / f"callgrind.{side}"
    broker = EmbeddedBroker(
        log_level="WARNING", config={"acl": SIDES[side], **QUIET},
        wrapper=["valgrind", "--tool=callgrind", f"--callgrind-out-file={prefix}",
                 "--vgdb=yes"])
    broker.start(timeout=600, env=ENV)
    pid = int(broker.pid or 0)
    phases: dict[str, Any] = {}
    try:
        with Admin(socket=broker.socket, transport="socket") as a:
            for t, api in CASES:
                a.create_topic(f"instr-{t}-{api}", 1)
        for t, api in CASES:
            topic = f"instr-{t}-{api}"
            units = records if api == "send" else batches  # requests to produce
            total = units * (1 if api == "send" else batch)  # records to read

            def produce(p: Any, first: bool, topic: str = topic, api: str = api,
                        units: int = units) -> None:
                for _ in range(SETUP_REQUESTS if first else units - SETUP_REQUESTS):
                    wait_idle(pid)
                    if api == "send":
                        p.send(topic, PAYLOAD, partition=0).get(600)
                    else:
                        p.send_batch(topic, [PAYLOAD] * batch, partition=0).get(600)

            got = [0]

            def consume(c: Any, first: bool, topic: str = topic, total: int = total,
                        got: list[int] = got) -> None:
                if first:
                    c.assign([TopicPartition(topic, 0)])
                deadline = time.monotonic() + 600
                while got[0] < total and time.monotonic() < deadline:
                    wait_idle(pid)
                    got[0] += sum(len(r) for r in c.poll(60_000).values())
                    if first:
                        return  # one poll: the connection's first fetch
                if got[0] != total:
                    raise RuntimeError(f"{side} {topic}: read {got[0]} of {total} records")

            for what, open_client, work in (
                    ("produce", lambda t=t: Producer(socket=broker.socket, transport=t,
                                                     linger_ms=0), produce),
                    ("fetch", lambda t=t: Consumer(socket=broker.socket, transport=t,
                                                   enable_auto_commit=False,
                                                   auto_offset_reset="earliest",
                                                   fetch_max_bytes=FETCH_BYTES,
                                                   max_partition_fetch_bytes=FETCH_BYTES),
                     consume)):
                label = f"{t}-{api}-{what}"
                phases[label] = _phase(broker, label, open_client, work)
                phases[label]["records"] = total
                print(f"{side} {label}: done", flush=True)
    finally:
        broker.stop(timeout=300)
        broker.cleanup()
    for label, n in dumps(prefix).items():
        base, setup = label.removesuffix("-setup"), label.endswith("-setup")
        if base in phases:
            phases[base]["setup_instructions" if setup else "instructions"] = n
    return phases


# --- the checks alone (--micro, run under callgrind by main) -----------------------------------------
def micro(calls: int) -> None:
    """Each case `calls` times between a zero and a dump of this process's own counters."""
    import logging
    import socket
    from types import SimpleNamespace

    import edgebus.server.dispatch as dispatch_mod
    from edgebus.acl import Policy, parse_rule
    from edgebus.protocol import messages as M
    from edgebus.server.acl import Authorizer
    from edgebus.server.acl.checks import TOPIC_READ, build_checks
    from edgebus.server.listeners.stream import Connection

    logging.disable(logging.WARNING)
    sock, _peer = socket.socketpair(socket.AF_UNIX)  # both ends open: SO_PEERCRED names us
    ten = Authorizer(Policy([parse_rule(r) for r in ACL_RULES]))
    fields = ("bench-topic", 0, 1, memoryview(b"x"))
    # The body's decoding is the same with access control on and off: left out of both.
    dispatch_mod.decode_produce = lambda body: fields

    def produce(conn: Any, corr: int, *rest: Any) -> Any:
        return dispatch_mod.NO_RESPONSE

    loop = SimpleNamespace(queue_answer=lambda *x: None, max_output_buffer=1 << 20,
                           max_input_buffer=1 << 20)
    off = dispatch_mod.Dispatcher(loop, {}, produce, None)  # type: ignore[arg-type]
    on = dispatch_mod.Dispatcher(loop, {}, produce, ten)  # type: ignore[arg-type]
    # Real server connections and a real FETCH request: attribute access on them is what the
    # supervisor pays (a SimpleNamespace's costs half as much again).
    c_off, c_on = (Connection(sock, loop, os.getpid(), os.getuid())  # type: ignore[arg-type]
                   for _ in range(2))
    key = int(M.Api.PRODUCE)
    body = memoryview(b"")
    on.dispatch_frame(c_on, key, 0, 1, body)  # the first: decided and cached
    fetch_check = build_checks(ten)[int(M.Api.FETCH)]
    req = M.FetchRequest(0, 1, 16384, [M.FetchPartition("bench-topic", 0, 0, 16384)])
    ten.check(c_on, TOPIC_READ, "bench-topic")
    cases: dict[str, Callable[[], Any]] = {
        "empty": lambda: None,
        "produce-off": lambda: off.dispatch_frame(c_off, key, 0, 1, body),
        "produce-on": lambda: on.dispatch_frame(c_on, key, 0, 1, body),
        "fetch-check": lambda: fetch_check(c_on, req),
        "check-cached": lambda: ten.check(c_on, TOPIC_READ, "bench-topic"),
    }
    pid = os.getpid()
    for name, f in cases.items():
        f()  # warm: the interpreter specialises a call site on its first runs
        f()
        callgrind_control(pid, "--zero")
        for _ in range(calls):
            f()
        callgrind_control(pid, f"--dump={name}")


def run_micro(out_dir: Path, calls: int) -> dict[str, float]:
    """Instructions per call of each micro case, the empty loop's subtracted."""
    prefix = out_dir / "callgrind.micro"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={prefix}",
                    "--vgdb=yes", sys.executable, "-m", "bench.acl_instructions", "--micro",
                    str(calls)], check=True, env={**os.environ, **ENV},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800)
    counts = dumps(prefix)
    empty = counts["empty"]
    return {k: (v - empty) / calls for k, v in counts.items() if k != "empty"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=5000,
                    help="send phases: records, one request each")
    ap.add_argument("--batches", type=int, default=500, help="batch phases: requests")
    ap.add_argument("--batch", type=int, default=100, help="records per batch")
    ap.add_argument("--micro-calls", type=int, default=20_000)
    ap.add_argument("--keep", help="keep callgrind's output files in this directory")
    ap.add_argument("--out", default=str(RESULTS / "acl-instructions.json"))
    ap.add_argument("--micro", type=int, help=argparse.SUPPRESS)  # the child under callgrind
    args = ap.parse_args(argv)
    if args.micro is not None:
        micro(args.micro)
        return 0
    if min(args.records, args.batches) <= SETUP_REQUESTS:
        ap.error(f"--records and --batches must be more than the {SETUP_REQUESTS} requests "
                 "counted apart as each connection's set-up")
    if any(os.environ.get(k) != v for k, v in ENV.items()):
        # The clients read the same knobs (lazy acknowledgements change what the supervisor
        # does per response) when edgebus is imported: start again with them set.
        cmd = [sys.executable, "-m", "bench.acl_instructions", *(sys.argv[1:] if argv is None
                                                                 else argv)]
        os.execve(sys.executable, cmd, {**os.environ, **ENV})
    if (why := valgrind_missing()) is not None:
        print(f"bench.acl_instructions: {why}", file=sys.stderr)
        return 2
    out_dir = Path(args.keep or tempfile.mkdtemp(prefix="acl-instr-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    sides = {}
    for side in SIDES:
        sides[side] = run_side(side, out_dir, args.records, args.batches, args.batch)
    (out_dir / "sides.json").write_text(json.dumps(sides))  # what a failure below leaves
    per_call = run_micro(out_dir, args.micro_calls)
    report = summarize(sides, per_call, args)
    report["seconds"] = round(time.monotonic() - started)
    report["profiles"] = diff_profiles(out_dir)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print_report(report)
    print(f"\nwrote {args.out}" + (f"; callgrind files in {out_dir}" if args.keep else ""))
    if not args.keep:
        shutil.rmtree(out_dir, ignore_errors=True)
    return 0


def summarize(sides: dict[str, dict[str, Any]], per_call: dict[str, float],
              args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    produce_acl = per_call["produce-on"] - per_call["produce-off"]
    for label in sides["A"]:
        a, b, a2 = (sides[s][label] for s in ("A", "B", "A2"))
        ia, ib, ia2 = a["instructions"], b["instructions"], a2["instructions"]
        row: dict[str, Any] = dict(
            phase=label, records=a["records"], connection_requests=a["requests"],
            setup_requests=a["setup_requests"],
            instructions_A=ia, instructions_B=ib, instructions_A2=ia2,
            B_over_A=round(ib / ia, 5), A2_over_A=round(ia2 / ia, 5),
            per_record_A=round(ia / a["records"]), per_record_B=round(ib / b["records"]),
            setup_instructions_A=a["setup_instructions"],
            setup_instructions_B=b["setup_instructions"],
            setup_instructions_A2=a2["setup_instructions"])
        # Requests of the steady part: one PRODUCE per send / send_batch, the consumer's FETCHes
        # (none on the rings: the standing fetch is re-armed by the supervisor, and checked
        # again before each answer; per record there).
        n = a["requests"] - a["setup_requests"]
        row["steady_requests"] = n
        for side, x in (("B", b), ("A2", a2)):
            if x["requests"] - x["setup_requests"] != n:
                row[f"note_{side}"] = f"{x['requests'] - x['setup_requests']} steady requests"
        if n > 0:
            row.update(per_request_A=round(ia / n), per_request_B=round(ib / n),
                       B_minus_A_per_request=round((ib - ia) / n),
                       A2_minus_A_per_request=round((ia2 - ia) / n),
                       checks_per_request_micro=round(produce_acl if label.endswith("produce")
                                                      else per_call["fetch-check"]))
            row["checks_share_micro"] = round(row["checks_per_request_micro"] * n / ib, 5)
        rows.append(row)
    return dict(
        when=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        commit=subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent).stdout.strip(),
        command="python -m bench.acl_instructions " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in
            (("records", args.records), ("batches", args.batches), ("batch", args.batch),
             ("micro_calls", args.micro_calls))),
        valgrind=subprocess.run(["valgrind", "--version"], capture_output=True,
                                text=True).stdout.strip(),
        python=sys.version.split()[0], loadavg=os.getloadavg(), rules=len(ACL_RULES),
        setup_requests=SETUP_REQUESTS, env=ENV, config=QUIET,
        micro_instructions_per_call={k: round(v, 1) for k, v in per_call.items()},
        rows=rows)


def diff_profiles(out_dir: Path, top: int = 8) -> dict[str, list[tuple[str, int]]]:
    """Per phase, the C functions whose own instructions differ most between B and A (and
    between A2 and A: the same list for the control)."""
    files: dict[tuple[str, str], Path] = {}
    for side in SIDES:
        for f in out_dir.glob(f"callgrind.{side}.*"):
            m = re.search(r"^desc: Trigger: dump (\S+)", f.read_text(errors="replace"), re.M)
            if m:
                files[(side, m.group(1))] = f
    out = {}
    for (side, label), f in sorted(files.items()):
        if side == "A":
            continue
        base = self_counts(files[("A", label)])
        other = self_counts(f)
        d = {k: other.get(k, 0) - base.get(k, 0) for k in set(base) | set(other)}
        out[f"{side}-A {label}"] = sorted(((k, v) for k, v in d.items() if v),
                                          key=lambda kv: -abs(kv[1]))[:top]
    return out


def print_report(r: dict[str, Any]) -> None:
    print("\n| phase | records / requests | instr A (off) | B (10 rules) | B/A | A2/A (control) | "
          "per request A | B-A per request | A2-A per request | checks per request (micro) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for x in r["rows"]:
        per = (f"{x['per_request_A']:,} | {x['B_minus_A_per_request']:,} | "
               f"{x['A2_minus_A_per_request']:,} | {x['checks_per_request_micro']:,}"
               if "per_request_A" in x else
               f"({x['per_record_A']:,}/record) | "
               f"({(x['instructions_B'] - x['instructions_A']) / x['records']:,.0f}/record) | "
               f"({(x['instructions_A2'] - x['instructions_A']) / x['records']:,.0f}/record) | ")
        print(f"| {x['phase']} | {x['records']:,} / {x['steady_requests']:,} | "
              f"{x['instructions_A']:,} | "
              f"{x['instructions_B']:,} | {x['B_over_A']:.5f} | {x['A2_over_A']:.5f} | {per} |")
    print("\n| each connection's first requests | A | B | A2 | B-A |")
    print("|---|---|---|---|---|")
    for x in r["rows"]:
        print(f"| {x['phase']} | {x['setup_instructions_A']:,} | {x['setup_instructions_B']:,} | "
              f"{x['setup_instructions_A2']:,} | "
              f"{x['setup_instructions_B'] - x['setup_instructions_A']:,} |")
    print("\nmicro (instructions per call, empty loop subtracted):",
          json.dumps(r["micro_instructions_per_call"]))


if __name__ == "__main__":
    raise SystemExit(main())
