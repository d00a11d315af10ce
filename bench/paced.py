"""Issue 16's paced cost rows alone, alternated over several rounds: CPU of all processes per
message, the server's share of a core, p50/p99, for edgebus (shm, socket), Redis Streams, a
bare Unix socket and the relay floor (the bare socket with `socat` in the middle, bench/floor.py),
one producer `send()` (linger_ms=0) -> one consumer, 100 B by default.

    python -m bench.paced [--rates 1000,10000] [--sizes 100] [--rounds 3] [--duration 4]
                          [--only edgebus-shm,edgebus-socket,redis-streams,unix-socket,
                                  unix-socket-relay]
                          (also: edgebus-shm-plainfetch, the shm path with one fetch per answer)
                          [--out bench/results/issue16-cheap-paced.md]
                          [--variants 'before:freeze=0;after:']   (bench/process_knobs.py)

`python -m bench` measures the same rows once each (its cost section and latency runs); this
runs only them, round after round with the systems alternated, so that the machine's load drifts
over all of them alike, and reports each round's ratio to Redis Streams (the spread shows the
noise) and the median ratio, and each system's ratio to the relay floor of its round.
Latency is timed from each record's scheduled send time (bench/run.py `producer_main`).

--variants runs every case once per variant, alternated within each round (the order reversed
every other round): `freeze=0` (the forked children keep the harness's heap in their
collections: every system's rows), `nice=N` (the supervisor's threads at nice N during the
edgebus rows; the peers' rows are the same run's controls), `VAR=VALUE` (an environment
variable of the supervisor: its own supervisor per environment), `policy=fifo` (the supervisor's
scheduling policy, as systemd's CPUSchedulingPolicy=; realtime at priority 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

import psutil

from bench import floor, peers, process_knobs
from bench import run as R

SYSTEMS = ("edgebus-shm", "edgebus-socket", "redis-streams", "unix-socket", floor.FLOOR)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.paced", description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="1000,10000")
    ap.add_argument("--sizes", default="100")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per case")
    ap.add_argument("--only", default=",".join(SYSTEMS))
    ap.add_argument("--variants", default="", help="NAME:KEY=VALUE+...;... (bench/process_knobs.py): "
                    "freeze=0, nice=N, or an environment variable of the supervisor")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    variants = process_knobs.parse_variants(a.variants)
    from edgebus.testing import EmbeddedBroker

    only = [s for s in a.only.split(",") if s]
    brokers: dict[tuple[tuple[str, str], ...], Any] = {}
    for v in variants:  # one supervisor per distinct environment
        if v.env_key() not in brokers:
            brokers[v.env_key()] = EmbeddedBroker(log_level="WARNING").start(env=v.env)
    redis = peers.RedisStreams()
    why_redis = redis.available()
    if why_redis is None:
        redis.start()
    def edgebus_adapters(broker: Any) -> dict[str, tuple[Any, Any]]:
        sup = psutil.Process(broker.pid)
        return {
            "edgebus-shm": (peers.Edgebus("shm", "send", broker), sup),
            "edgebus-socket": (peers.Edgebus("socket", "send", broker), sup),
            # The shm path with one fetch per answer (EDGEBUS_SHM_STANDING_FETCH=0): before/after.
            "edgebus-shm-plainfetch": (peers.Edgebus("shm", "send", broker), sup),
        }

    per_env = {k: edgebus_adapters(b) for k, b in brokers.items()}
    adapters: dict[str, tuple[Any, Any]] = {"unix-socket": (peers.UnixSocket(), None)}
    if why_redis is None:
        adapters["redis-streams"] = (redis, None)
    elif "redis-streams" in only:
        print(f"redis-streams skipped: {why_redis}", flush=True)
    relay = peers.SocatRelay()
    if (why_relay := relay.available()) is None:
        adapters[floor.FLOOR] = (relay, None)
    elif floor.FLOOR in only:
        print(f"{floor.FLOOR} (the relay floor) skipped: {why_relay}", flush=True)
    load0 = os.getloadavg()

    def lookup(v: process_knobs.Variant, name: str) -> tuple[Any, Any] | None:
        return adapters.get(name) or per_env[v.env_key()].get(name)

    try:
        rows = run_rounds(lookup, variants, only, [int(r) for r in a.rates.split(",")],
                          [int(s) for s in a.sizes.split(",")], a.rounds, a.duration)
        gc_notes = [_supervisor_gc(b, env) for env, b in brokers.items()]
    finally:
        for broker in brokers.values():
            broker.stop()
            broker.cleanup()
        if why_redis is None:
            redis.stop()
    md = [*render(rows, load0, os.getloadavg(), a), "", *gc_notes]
    print("\n".join(md))
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(md) + "\n")


def run_rounds(lookup: Callable[[process_knobs.Variant, str], tuple[Any, Any] | None],
               variants: list[process_knobs.Variant], only: list[str], rates: list[int],
               sizes: list[int], rounds: int, duration: float,
               run_case: Callable[..., dict[str, Any]] | None = None,
               set_rate: Callable[[int], None] | None = None,
               progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """The paced one-record cases, `rounds` times: in each round every rate and size, and in
    each of those every variant x system that `lookup` gives an adapter for (`(adapter, the
    process whose CPU is the server's or None)`), the order reversed every other round so that
    drift in the machine's load touches all alike. Each row has its "round" and "variant".
    `run_case`/`set_rate`: `python -m bench` passes its own (run as a script, bench/run.py is
    another module than bench.run, and the forked producers read its RATE)."""

    from edgebus import tuning
    from edgebus.client import shm_sync_channel

    def rate_of(r: int) -> None:
        R.RATE = r
        if set_rate is not None:
            set_rate(r)

    rows: list[dict[str, Any]] = []
    try:
        for rnd in range(rounds):
            for rate in rates:
                rate_of(rate)
                for size in sizes:
                    cases = [(v, s) for v in variants for s in only if lookup(v, s) is not None]
                    if rnd % 2:
                        cases.reverse()  # alternate: drift in the machine's load touches all alike
                    for v, name in cases:
                        adapter, measured = lookup(v, name)  # type: ignore[misc]
                        # Read by the forked clients (the module's copy of the knob).
                        shm_sync_channel.STANDING = tuning.STANDING and name != "edgebus-shm-plainfetch"
                        R.CHILD_GC_FREEZE = v.freeze
                        if measured is not None:  # the supervisor: this variant's priority
                            process_knobs.set_policy(measured.pid, v.policy)
                            process_knobs.renice(measured.pid, v.nice or 0)
                        row = (run_case or R.run_case)(adapter, name, "send", size, 1, 1, True,
                                                       duration, measured)
                        row["round"], row["variant"] = rnd, v.name
                        rows.append(row)
                        (progress or _print_row)(row)
    finally:
        rate_of(10_000)
        R.CHILD_GC_FREEZE = True
        shm_sync_channel.STANDING = tuning.STANDING
    return rows


def _print_row(row: dict[str, Any]) -> None:
    print(f"  round {row['round']} {row['variant']:8} {row['system']:15} {row['size']:5} B "
          f"{row.get('rate', 0):6}/s  cpu/msg {row.get('cpu_us_per_msg')} us (p "
          f"{row.get('cpu_us_producer')} c {row.get('cpu_us_consumer')} s "
          f"{row.get('cpu_us_server')})  server {row.get('server_cpu_percent')} %  p50 "
          f"{row.get('p50_us')} p99 {row.get('p99_us')} us  server wake-ups/msg "
          f"{row.get('server_wakeups_per_msg')}", flush=True)


def round_ratios(rows: list[dict[str, Any]]) -> dict[tuple[str, int, int, str], dict[str, list[float]]]:
    """Per (system, size, rate, variant): each round's ratios, in round order: `per_redis`,
    `per_floor`, `server_per_floor` (bench/floor.py `annotate`, within the round) and
    `per_bare_p50` (p50 over the bare Unix socket's p50 of the same round), plus the round's
    own `cpu`, `server_percent`, `p50` and `p99`. Medians of these judge the targets: a single
    case moved between 0.52 and 0.69 of Redis in one quiet hour."""
    bare = {_group(r): r.get("p50_us") for r in rows if r["system"] == "unix-socket"}
    out: dict[tuple[str, int, int, str], dict[str, list[float]]] = {}
    for r, x in zip(rows, floor.annotate(rows, _group), strict=True):
        d = out.setdefault((r["system"], r["size"], r.get("rate", 0), r.get("variant", "default")), {})
        b = bare.get(_group(r))
        x = dict(x, per_bare_p50=r["p50_us"] / b if b and r.get("p50_us") is not None else None,
                 cpu=r.get("cpu_us_per_msg"), server_percent=r.get("server_cpu_percent"),
                 p50=r.get("p50_us"), p99=r.get("p99_us"))
        for key, v in x.items():
            if v is not None:
                d.setdefault(key, []).append(v)
    return out


def render(rows: list[dict[str, Any]], load0: tuple[float, ...], load1: tuple[float, ...],
           a: argparse.Namespace) -> list[str]:
    md = [f"# issue 16: paced cost, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}", "",
          f"`python -m bench.paced --rates {a.rates} --sizes {a.sizes} --rounds {a.rounds} "
          f"--duration {a.duration} --only {a.only}"
          + (f" --variants '{a.variants}'" if getattr(a, "variants", "") else "") + "`", "",
          f"commit {_commit()}; {os.cpu_count()} CPUs, load average {load0[0]:.2f} before / "
          f"{load1[0]:.2f} after (a shared machine: compare within a round).", "",
          "p50/p99: one-way, from each record's **scheduled** send time (the paced loop's "
          "schedule, the same for every system) to its receipt, so a producer held up counts its "
          "delay in every late record. `unix-socket-relay` is the floor: the bare socket with "
          "`socat -u` in the middle (bench/floor.py). Server wake-ups / reads / writes: the "
          "server's voluntary context switches and read/write calls per message.", "",
          "| round | variant | system | size | rate | p50 us | p99 us | CPU us/msg (all) "
          "| producer / consumer / server | server % core | server wake-ups / reads / writes "
          "per msg | CPU / Redis | CPU / floor | server / floor's |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ratios = round_ratios(rows)
    for r, x in zip(rows, floor.annotate(rows, _group), strict=True):
        md.append("| " + " | ".join(str(v) for v in (
            r["round"], r.get("variant", "default"), r["system"], r["size"], r.get("rate", ""),
            r.get("p50_us", ""),
            r.get("p99_us", ""), r.get("cpu_us_per_msg", ""),
            f"{r.get('cpu_us_producer')} / {r.get('cpu_us_consumer')} / {r.get('cpu_us_server')}",
            r.get("server_cpu_percent", ""),
            " / ".join(str(r.get(f"server_{k}_per_msg", "-")) for k in ("wakeups", "syscr", "syscw")),
            _f(x["per_redis"]), _f(x["per_floor"]), _f(x["server_per_floor"]))) + " |")
    md += ["", "Medians over the rounds (each round's ratios in brackets):", "",
           "| system | size | rate | variant | CPU / Redis Streams (goal <= 0.5) | CPU / relay floor "
           "| server CPU / relay's |", "|---|---|---|---|---|---|---|"]
    for (system, size, rate, variant), d in sorted(ratios.items()):
        md.append(f"| {system} | {size} | {rate} | {variant} | "
                  + " | ".join(_med(d.get(k, [])) for k in ("per_redis", "per_floor",
                                                             "server_per_floor")) + " |")
    md += ["", "The floor against the goal (medians over the rounds):", ""]
    md += floor.render_verdicts(floor.verdicts(rows))
    md += ["", "Latency, medians over the rounds (each round's value in brackets); `/ bare` is "
           "the p50 over the bare Unix socket's p50 of the same round and variant (issue 16's "
           "goal for edgebus-shm: at most 2, and p99 under 1,000 us):", ""]
    md += latency_table(rows)
    return md


def _group(r: dict[str, Any]) -> tuple[Any, ...]:
    # rows comparable with each other: one round of one rate and size, one variant
    return (r.get("round", 0), r.get("rate"), r.get("size"), r.get("variant", "default"))


def latency_table(rows: list[dict[str, Any]]) -> list[str]:
    """Per (rate, size, system, variant): median p50, p99 and p50 / bare socket's p50 over the
    rounds."""
    bare = {_group(r): r.get("p50_us") for r in rows if r["system"] == "unix-socket"}
    by: dict[tuple[Any, ...], dict[str, list[float]]] = {}
    for r in rows:
        d = by.setdefault((r.get("rate", 0), r["size"], r["system"], r.get("variant", "default")), {})
        for key in ("p50_us", "p99_us"):
            if r.get(key) is not None:
                d.setdefault(key, []).append(r[key])
        b = bare.get(_group(r))
        if b and r.get("p50_us") is not None:
            d.setdefault("per_bare", []).append(r["p50_us"] / b)
    md = ["| rate | size | system | variant | p50 us | p99 us | p50 / bare socket's |",
          "|---|---|---|---|---|---|---|"]
    for (rate, size, system, variant), d in sorted(by.items()):
        md.append(f"| {rate} | {size} | {system} | {variant} | "
                  + " | ".join(_med(d.get(k, []), 0 if k != "per_bare" else 2)
                               for k in ("p50_us", "p99_us", "per_bare")) + " |")
    return md


def _supervisor_gc(broker: Any, env: tuple[tuple[str, str], ...]) -> str:
    """The supervisor's garbage collections over the whole run (its status's `gc`: objects
    frozen at its start, collections per generation since it started)."""
    from edgebus import Admin

    with Admin(socket=broker.socket, transport="socket") as adm:
        g = adm.status().get("gc") or {}
    name = " ".join(f"{k}={v}" for k, v in env) or "default environment"
    return (f"Supervisor ({name}) at the end of the run: {g.get('frozen', '?')} objects frozen "
            f"at its start; collections of generations 0 / 1 / 2 since it started: "
            f"{' / '.join(str(x) for x in g.get('collections', []))}.")


def _commit() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                             text=True, cwd=os.path.dirname(os.path.abspath(__file__)), check=False)
    except OSError:
        return "?"
    return out.stdout.strip() or "?"


def _f(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


def _med(vs: list[float], digits: int = 2) -> str:
    if not vs:
        return "-"
    return f"{statistics.median(vs):.{digits}f} (" + ", ".join(f"{v:.{digits}f}" for v in vs) + ")"


if __name__ == "__main__":
    main()
