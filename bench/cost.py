"""Issue 16's figures, in the same run as `python -m bench` (which calls `run`): cost at a paced
rate, durable sends without lingering, the library's defaults against the tuned settings, and
the issue's targets evaluated on all of them.

- CPU of all processes per message (producer, consumer, server: edgebus's supervisor, or
  redis-server) at 1,000 msg/s here, at 10,000 msg/s from the main latency runs, for
  edgebus (shm and socket, `send` with `linger_ms=0`), Redis Streams and a bare Unix socket;
  the supervisor's share of a core;
- `acks="durable"`, `linger_ms=0`: one producer unpaced (records/s), and paced at 10,000/s
  (p50/p99 against the fsync p50 measured here, on the supervisor's data directory);
- defaults: `send_batch`, `send` and the consumer with the library's defaults against the
  benchmark's tuned rows of the same run.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import peers

SLOW_RATE = 1_000


def fsync_p50_us(directory: Path, count: int = 200) -> dict[str, float]:
    """fsync of a 4 KiB append, as the supervisor's group commit does, in its data directory."""
    path = directory / "bench-fsync.tmp"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times = []
    try:
        for _ in range(count):
            os.write(fd, b"\0" * 4096)
            t0 = time.perf_counter_ns()
            os.fsync(fd)
            times.append(time.perf_counter_ns() - t0)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return {"p50_us": round(times[len(times) // 2] / 1000, 1),
            "p99_us": round(times[int(len(times) * 0.99)] / 1000, 1),
            "mean_us": round(statistics.fmean(times) / 1000, 1)}


def run(run_case: Callable[..., dict[str, Any]], set_rate: Callable[[int], None], broker: Any,
        sup: Any, redis: Any | None, shm: bool, duration: float, lat_duration: float,
        progress: Callable[[dict[str, Any]], None]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The extra rows (each tagged with "section") and the fsync figures."""
    rows: list[dict[str, Any]] = []

    def add(section: str, row: dict[str, Any]) -> None:
        row["section"] = section
        rows.append(row)
        progress(row)

    transports = (["shm"] if shm else []) + ["socket"]
    # Paced, one-record API, at 1,000 msg/s (10,000 msg/s: the main latency rows).
    set_rate(SLOW_RATE)
    try:
        for t in transports:
            add("paced", run_case(peers.Edgebus(t, "send", broker), f"edgebus-{t}", "send", 100,
                                  1, 1, True, lat_duration, sup))
        add("paced", run_case(peers.UnixSocket(), "unix-socket", "send", 100, 1, 1, True,
                              lat_duration, None))
        if redis is not None:
            add("paced", run_case(redis, "redis-streams", "send", 100, 1, 1, True, lat_duration, None))
    finally:
        set_rate(10_000)
    # Durable without lingering: unpaced, then paced at 10,000/s.
    t = transports[0]
    add("durable", run_case(peers.Edgebus(t, "send", broker, acks="durable", linger_ms=0),
                            f"edgebus-{t}-durable", "send", 100, 1, 1, False, duration, sup))
    add("durable", run_case(peers.Edgebus(t, "send", broker, acks="durable"),
                            f"edgebus-{t}-durable", "send", 100, 1, 1, True, lat_duration, sup))
    # The library's defaults (same transport, 100 B, 1 -> 1).
    for api, which in (("batch", "all"), ("send", "all"), ("batch", "consumer")):
        add("defaults", run_case(peers.Edgebus(t, api, broker, defaults=which),
                                 f"edgebus-{t}-defaults-{which}", api, 100, 1, 1, False, duration,
                                 sup))
    return rows, fsync_p50_us(Path(broker.data_dir))


def _find(rows: list[dict[str, Any]], **kw: Any) -> dict[str, Any] | None:
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def targets(rows: list[dict[str, Any]], fsync: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 16's goals on this run's rows (main rows and cost rows together)."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: float, better: str, unit: str) -> None:
        if value is None:
            out.append({"target": name, "value": None, "goal": goal, "met": None})
            return
        met = value >= goal if better == "higher" else value <= goal
        out.append({"target": name, "value": round(value, 3), "goal": goal, "unit": unit,
                    "met": met, "of_goal": round(value / goal, 3) if goal else None})

    def lat(system: str, size: int, rate: int, key: str) -> float | None:
        r = _find(rows, system=system, size=size, topology="1->1", mode="latency", rate=rate)
        return r.get(key) if r else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    for rate in (SLOW_RATE, 10_000):
        redis = lat("redis-streams", 100, rate, "cpu_us_per_msg")
        for t in ("shm", "socket"):
            add(f"CPU/msg edgebus-{t} / Redis Streams at {rate:,}/s",
                ratio(lat(f"edgebus-{t}", 100, rate, "cpu_us_per_msg"), redis), 0.5, "lower", "x")
    add("supervisor % of a core at 1,000/s (shm)",
        lat("edgebus-shm", 100, SLOW_RATE, "server_cpu_percent"), 10, "lower", "%")
    for size in (100, 1024):
        shm50 = lat("edgebus-shm", size, 10_000, "p50_us")
        add(f"shm p50 / unix-socket p50 at 10,000/s, {size} B",
            ratio(shm50, lat("unix-socket", size, 10_000, "p50_us")), 2, "lower", "x")
        add(f"shm p99 at 10,000/s, {size} B", lat("edgebus-shm", size, 10_000, "p99_us"), 1000,
            "lower", "us")
        add(f"socket p50 / shm p50 at 10,000/s, {size} B",
            ratio(lat("edgebus-socket", size, 10_000, "p50_us"), shm50), 2, "lower", "x")
    dur = [r for r in rows if r.get("section") == "durable"]
    unpaced = next((r for r in dur if r["mode"] == "throughput"), None)
    add("durable linger_ms=0 unpaced records/s", unpaced["msgs_per_s"] if unpaced else None,
        100_000, "higher", "msg/s")
    paced = next((r for r in dur if r["mode"] == "latency"), None)
    add("durable paced 10,000/s: received / sent",
        paced["received"] / paced["sent"] if paced and paced["sent"] else None, 1, "higher", "x")
    add("durable paced 10,000/s: p50 / fsync p50",
        ratio(paced["p50_us"] if paced else None, fsync["p50_us"] if fsync else None), 3, "lower", "x")
    t = "shm" if _find(rows, system="edgebus-shm") else "socket"

    def tp(system: str, api: str, size: int = 100) -> float | None:
        r = _find(rows, system=system, api=api, size=size, topology="1->1", mode="throughput")
        return r["msgs_per_s"] if r else None

    for api, which, name in (("batch", "all", "send_batch"), ("send", "all", "send"),
                             ("batch", "consumer", "consumer")):
        add(f"defaults / tuned: {name}", ratio(tp(f"edgebus-{t}-defaults-{which}", api),
                                              tp(f"edgebus-{t}", api)), 0.9, "higher", "x")
    r1 = _find(rows, system="edgebus-shm", api="batch", size=1024, topology="1->1", mode="throughput")
    u1 = _find(rows, system="unix-socket", api="batch", size=1024, topology="1->1", mode="throughput")
    add("1 KiB send_batch shm MB/s / unix-socket MB/s",
        ratio(r1["mb_per_s"] if r1 else None, u1["mb_per_s"] if u1 else None), 0.5, "higher", "x")
    return out


def render(rows: list[dict[str, Any]], fsync: dict[str, Any] | None,
           goals: list[dict[str, Any]]) -> list[str]:
    md = ["", "## Cost at every rate (issue 16)", "",
          "| section | system | api | size | mode | rate | msg/s | p50 us | p99 us "
          "| CPU us/msg (all processes) | server % core |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append("| " + " | ".join(str(x) for x in (
            r.get("section", "main"), r["system"], r["api"], r["size"], r["mode"], r.get("rate", ""),
            r.get("msgs_per_s", ""), r.get("p50_us", ""), r.get("p99_us", ""),
            r.get("cpu_us_per_msg", ""), r.get("server_cpu_percent", ""))) + " |")
    if fsync:
        md += ["", f"fsync of a 4 KiB append in the supervisor's data directory: p50 {fsync['p50_us']} us, "
               f"p99 {fsync['p99_us']} us."]
    md += ["", "| issue 16 target | value | goal | met | of goal |", "|---|---|---|---|---|"]
    for g in goals:
        met = "-" if g["met"] is None else ("yes" if g["met"] else "no")
        md.append(f"| {g['target']} | {g['value']} | {g['goal']} | {met} | {g.get('of_goal', '')} |")
    return md
