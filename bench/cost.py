"""Issue 16's figures, in the same run as `python -m bench` (which calls `run`): cost at a paced
rate, durable sends without lingering, the library's defaults against the tuned settings, and
the issue's targets evaluated on all of them.

- CPU of all processes per message (producer, consumer, server: edgebus's supervisor,
  redis-server, or the relay) at 1,000 and 10,000 msg/s, 100 B, for edgebus (shm and socket,
  `send` with `linger_ms=0`), Redis Streams, a bare Unix socket and the relay floor (the bare
  socket with `socat` in the middle, bench/floor.py), in ROUNDS alternated rounds
  (bench/paced.py `run_rounds`, the order reversed every other round); the supervisor's share of
  a core; each system against Redis Streams and against the floor within each round, and the
  targets judged on the medians of those per-round ratios (one case of each moved between 0.52
  and 0.69 of Redis in one quiet hour: bench/results/issue16-before-after-s25.md);
- the same paced rows at 10,000 msg/s with 1 KiB records (the latency targets at 1 KiB), in as
  many alternated rounds, judged on the medians of each round's p50 ratios (one case of the
  shm / bare socket p50 ratio moved between 2.7 and 3.6 across two full runs);
- 1 KiB `send_batch` through the rings against the bare Unix socket (MB/s), unpaced, the same
  number of alternated rounds, judged on the median of each round's ratio;
- `acks="durable"`, `linger_ms=0`: one producer unpaced (records/s), and paced at 10,000/s
  (p50/p99 against the fsync p50 measured right before and right after that case, on the
  supervisor's data directory: `fsync_bracket` says when the two disagree);
- defaults: `send_batch`, `send` and the consumer with the library's defaults against the
  benchmark's tuned settings (256 KiB batches, 2 ms linger, 1 MiB fetches: bench/peers.py), each
  default and its tuned case run side by side in the same number of alternated rounds and judged
  on the median of each round's ratio (one case of each moved 0.89-1.05 between runs).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import floor, peers

SLOW_RATE = 1_000
# The paced rows (100 B, 1 -> 1) run in this many alternated rounds; targets on their medians.
ROUNDS = 3
PACED_RATES = (SLOW_RATE, 10_000)
PACED_SIZE = 100
# ... and 1 KiB records at 10,000 msg/s, the same systems and rounds (issue 16's 1 KiB latency).
PACED_1K = (10_000, 1024)
LATENCY_SIZES = (PACED_SIZE, PACED_1K[1])
# ... and the 1 KiB send_batch pair (edgebus-shm, unix-socket), unpaced, in as many rounds.
THROUGHPUT = "throughput-1k"
THROUGHPUT_SIZE = 1024
# The fsync p50 before and after the paced durable case further apart than this: the disk (or
# the machine's load) changed under the case, so the p50 / fsync p50 check is not conclusive.
FSYNC_SPREAD_MAX = 2.0
# The library's defaults compared with the tuned rows: (api, which side takes the defaults).
DEFAULTS = (("batch", "all"), ("send", "all"), ("batch", "consumer"))


def fsync_p50_us(directory: Path, count: int = 500, max_seconds: float = 3.0) -> dict[str, float]:
    """fsync of a 4 KiB append, as the supervisor's group commit does, in its data directory:
    `count` samples, fewer if they take longer than `max_seconds` (a slow disk)."""
    path = directory / "bench-fsync.tmp"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times: list[int] = []
    deadline = time.monotonic() + max_seconds
    try:
        while len(times) < count and (len(times) < 20 or time.monotonic() < deadline):
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
            "mean_us": round(statistics.fmean(times) / 1000, 1), "samples": len(times)}


def fsync_bracket(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The fsync figures taken right before and right after the paced durable case: their p50s'
    mean is what the case is compared with, and `conclusive` is False when the two p50s differ
    by more than FSYNC_SPREAD_MAX times (the disk's speed moved during the case)."""
    b, a = before["p50_us"], after["p50_us"]
    spread = max(a, b) / min(a, b) if min(a, b) > 0 else float("inf")
    return {"before": before, "after": after, "p50_us": round((a + b) / 2, 1),
            "spread": round(spread, 2), "conclusive": spread <= FSYNC_SPREAD_MAX}


def run(run_case: Callable[..., dict[str, Any]], set_rate: Callable[[int], None], broker: Any,
        sup: Any, redis: Any | None, shm: bool, duration: float, lat_duration: float,
        progress: Callable[[dict[str, Any]], None],
        relay: Any | None = None, rounds: int = ROUNDS) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The extra rows (each tagged with "section"; the paced ones with their "round") and the
    fsync figures (`fsync_bracket`)."""
    rows: list[dict[str, Any]] = []

    def add(section: str, row: dict[str, Any]) -> None:
        row["section"] = section
        rows.append(row)
        progress(row)

    transports = (["shm"] if shm else []) + ["socket"]
    # Paced, one-record API, 100 B, 1,000 and 10,000 msg/s, ROUNDS alternated rounds.
    from bench import paced, process_knobs

    adapters: dict[str, tuple[Any, Any]] = {
        f"edgebus-{t}": (peers.Edgebus(t, "send", broker), sup) for t in transports}
    adapters["unix-socket"] = (peers.UnixSocket(), None)
    if relay is not None:
        adapters[floor.FLOOR] = (relay, None)
    if redis is not None:
        adapters[floor.REDIS] = (redis, None)
    paced.run_rounds(lambda _v, name: adapters.get(name), process_knobs.parse_variants(""),
                     list(adapters), list(PACED_RATES), [PACED_SIZE], rounds, lat_duration,
                     run_case, set_rate, progress=lambda row: add("paced", row))
    paced.run_rounds(lambda _v, name: adapters.get(name), process_knobs.parse_variants(""),
                     list(adapters), [PACED_1K[0]], [PACED_1K[1]], rounds, lat_duration,
                     run_case, set_rate, progress=lambda row: add("paced", row))
    # 1 KiB send_batch through the rings against the bare socket, the same rounds alternated:
    # one wall-clock pair moved 0.39-0.57 between quiet runs (the bare socket alone 3x).
    if shm:
        pair = [("edgebus-shm", peers.Edgebus("shm", "batch", broker), sup),
                ("unix-socket", peers.UnixSocket(), None)]
        for rnd in range(rounds):
            for name, adapter, measured in (pair if rnd % 2 == 0 else pair[::-1]):
                row = run_case(adapter, name, "batch", THROUGHPUT_SIZE, 1, 1, False, duration,
                               measured)
                row["round"] = rnd
                add(THROUGHPUT, row)
    # Durable without lingering: unpaced, then paced at 10,000/s.
    t = transports[0]
    add("durable", run_case(peers.Edgebus(t, "send", broker, acks="durable", linger_ms=0),
                            f"edgebus-{t}-durable", "send", 100, 1, 1, False, duration, sup))
    # The fsync p50 right before and right after the paced case, same directory: one figure
    # taken elsewhere in the run moved 10x between runs on this machine.
    before = fsync_p50_us(Path(broker.data_dir))
    add("durable", run_case(peers.Edgebus(t, "send", broker, acks="durable"),
                            f"edgebus-{t}-durable", "send", 100, 1, 1, True, lat_duration, sup))
    fsync = fsync_bracket(before, fsync_p50_us(Path(broker.data_dir)))
    # The library's defaults against the tuned settings (same transport, 100 B, 1 -> 1), each
    # pair side by side in alternated rounds: one case of each moved 0.89-1.05 between runs.
    cases = [(f"edgebus-{t}", api, peers.Edgebus(t, api, broker)) for api in ("batch", "send")]
    cases += [(f"edgebus-{t}-defaults-{which}", api, peers.Edgebus(t, api, broker, defaults=which))
              for api, which in DEFAULTS]
    for rnd in range(rounds):
        for name, api, adapter in (cases if rnd % 2 == 0 else cases[::-1]):
            row = run_case(adapter, name, api, 100, 1, 1, False, duration, sup)
            row["round"] = rnd
            add("defaults", row)
    return rows, fsync


def _find(rows: list[dict[str, Any]], **kw: Any) -> dict[str, Any] | None:
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def paced_rounds(rows: list[dict[str, Any]]) -> dict[tuple[str, int, int], dict[str, list[float]]]:
    """Per (system, size, rate): each round's figures and ratios (bench/paced.py
    `round_ratios`) of the cost section's paced rows (section "paced", with a round)."""
    from bench import paced

    mine = [r for r in rows if r.get("section") == "paced" and "round" in r and not r.get("errors")]
    return {(system, size, rate): d
            for (system, size, rate, _v), d in paced.round_ratios(mine).items()}


def _p50_ratio(rows: list[dict[str, Any]], a: str, b: str,
               size: int = PACED_SIZE) -> tuple[float | None, list[float]]:
    """p50 of system a over system b's, each round of the paced 10,000/s rows; the median."""
    by = {(r["round"], r["system"]): r.get("p50_us") for r in rows
          if r.get("section") == "paced" and "round" in r and r.get("rate") == 10_000
          and r.get("size") == size and not r.get("errors")}
    vs = [pa / pb for (rnd, s), pa in sorted(by.items())
          if s == a and pa is not None and (pb := by.get((rnd, b)))]
    return (statistics.median(vs) if vs else None), vs


def targets(rows: list[dict[str, Any]], fsync: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 16's goals on this run's rows (main rows and cost rows together)."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: float, better: str, unit: str,
            rounds: list[float] | None = None) -> None:
        if value is None:
            out.append({"target": name, "value": None, "goal": goal, "met": None})
            return
        met = value >= goal if better == "higher" else value <= goal
        out.append({"target": name, "value": round(value, 3), "goal": goal, "unit": unit,
                    "met": met, "of_goal": round(value / goal, 3) if goal else None,
                    # each round's value (the value is their median); one case: [value]
                    "rounds": [round(v, 3) for v in (rounds or [value])]})

    def lat(system: str, size: int, rate: int, key: str) -> float | None:
        r = _find(rows, system=system, size=size, topology="1->1", mode="latency", rate=rate)
        return r.get(key) if r else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    medians = paced_rounds(rows)

    def med(system: str, rate: int, key: str,
            size: int = PACED_SIZE) -> tuple[float | None, list[float]]:
        vs = medians.get((system, size, rate), {}).get(key, [])
        return (statistics.median(vs) if vs else None), vs

    for rate in PACED_RATES:
        for t in ("shm", "socket"):
            v, vs = med(f"edgebus-{t}", rate, "per_redis")
            add(f"CPU/msg edgebus-{t} / Redis Streams at {rate:,}/s", v, 0.5, "lower", "x", vs)
    pct, pct_rounds = med("edgebus-shm", SLOW_RATE, "server_percent")
    add("supervisor % of a core at 1,000/s (shm)", pct, 10, "lower", "%", pct_rounds)
    for size in LATENCY_SIZES:
        if (medians.get(("edgebus-shm", size, 10_000), {}).get("p50")
                and medians.get(("unix-socket", size, 10_000), {}).get("p50")):
            # the paced rounds: medians of each round's figure
            for name, (v, vs), goal, unit in (
                    ("shm p50 / unix-socket p50", med("edgebus-shm", 10_000, "per_bare_p50", size),
                     2, "x"),
                    ("shm p99", med("edgebus-shm", 10_000, "p99", size), 1000, "us"),
                    ("socket p50 / shm p50",
                     _p50_ratio(rows, "edgebus-socket", "edgebus-shm", size), 2, "x")):
                add(f"{name} at 10,000/s, {size} B", v, goal, "lower", unit, vs)
            continue
        # no paced rounds of this size (--no-cost, or an older run): the main latency rows
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
    add("durable paced 10,000/s: p50 / fsync p50 (mean of before and after)",
        ratio(paced["p50_us"] if paced else None, fsync["p50_us"] if fsync else None), 3, "lower", "x")
    if fsync and not fsync.get("conclusive", True) and out[-1]["met"] is not None:
        out[-1]["met"] = None  # the disk moved under the case: neither met nor missed
        out[-1]["note"] = f"not conclusive: fsync p50 moved {fsync['spread']}x across the case"
    t = "shm" if _find(rows, system="edgebus-shm") else "socket"

    def tp(system: str, api: str, size: int = 100) -> float | None:
        r = _find(rows, system=system, api=api, size=size, topology="1->1", mode="throughput")
        return r["msgs_per_s"] if r else None

    for (api, which), name in zip(DEFAULTS, ("send_batch", "send", "consumer"), strict=True):
        vs = _defaults_ratios(rows, t, api, which)
        if vs:  # the section's alternated rounds: the median of each round's own ratio
            add(f"defaults / tuned: {name}", statistics.median(vs), 0.9, "higher", "x", vs)
        else:  # an older run's single cases: the defaults row against the main tuned row
            add(f"defaults / tuned: {name}", ratio(tp(f"edgebus-{t}-defaults-{which}", api),
                                                  tp(f"edgebus-{t}", api)), 0.9, "higher", "x")
    pairs = _mb_ratios(rows)
    if pairs:  # the section's alternated rounds: the median of each round's own ratio
        add("1 KiB send_batch shm MB/s / unix-socket MB/s", statistics.median(pairs), 0.5,
            "higher", "x", pairs)
    else:  # the main throughput rows: one case each
        r1 = _find(rows, system="edgebus-shm", api="batch", size=1024, topology="1->1",
                   mode="throughput")
        u1 = _find(rows, system="unix-socket", api="batch", size=1024, topology="1->1",
                   mode="throughput")
        add("1 KiB send_batch shm MB/s / unix-socket MB/s",
            ratio(r1["mb_per_s"] if r1 else None, u1["mb_per_s"] if u1 else None), 0.5, "higher",
            "x")
    return out


def _defaults_ratios(rows: list[dict[str, Any]], t: str, api: str, which: str) -> list[float]:
    """Each round's defaults row over the tuned row of the same round and api (the "defaults"
    section's alternated rounds), in round order; empty for a run without those rounds."""
    by = {(r["round"], r["system"], r["api"]): r.get("msgs_per_s") for r in rows
          if r.get("section") == "defaults" and "round" in r and not r.get("errors")}
    return [d / tuned for (rnd, s, a), d in sorted(by.items())
            if s == f"edgebus-{t}-defaults-{which}" and a == api and d is not None
            and (tuned := by.get((rnd, f"edgebus-{t}", api)))]


def _mb_ratios(rows: list[dict[str, Any]]) -> list[float]:
    """Each round's edgebus-shm MB/s over the bare socket's (the THROUGHPUT section), in order."""
    by = {(r["round"], r["system"]): r.get("mb_per_s") for r in rows
          if r.get("section") == THROUGHPUT and not r.get("errors")}
    return [mb / u for (rnd, s), mb in sorted(by.items())
            if s == "edgebus-shm" and mb is not None and (u := by.get((rnd, "unix-socket")))]


def render(rows: list[dict[str, Any]], fsync: dict[str, Any] | None,
           goals: list[dict[str, Any]], main_rows: list[dict[str, Any]] | None = None) -> list[str]:
    md = ["", "## Cost at every rate (issue 16)", "",
          "p50/p99 are one-way, from each record's scheduled send time (the paced loop's schedule, "
          "the same for every system: a producer held up counts its delay in every late record).",
          "",
          "| section | round | system | api | size | mode | rate | msg/s | p50 us | p99 us "
          "| CPU us/msg (all processes) | server us/msg | server % core |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append("| " + " | ".join(str(x) for x in (
            r.get("section", "main"), r.get("round", ""), r["system"], r["api"], r["size"],
            r["mode"], r.get("rate", ""),
            r.get("msgs_per_s", ""), r.get("p50_us", ""), r.get("p99_us", ""),
            r.get("cpu_us_per_msg", ""), r.get("cpu_us_server", ""),
            r.get("server_cpu_percent", ""))) + " |")
    md += floor_table((main_rows or []) + rows)
    if fsync:
        b, a = fsync["before"], fsync["after"]
        md += ["", "fsync of a 4 KiB append in the supervisor's data directory, right before / after "
               f"the paced durable case: p50 {b['p50_us']} us / {a['p50_us']} us (p99 "
               f"{b.get('p99_us', '-')} / {a.get('p99_us', '-')} us, {b.get('samples', '-')} / "
               f"{a.get('samples', '-')} samples); the check uses their mean, {fsync['p50_us']} us."]
        if not fsync.get("conclusive", True):
            md.append(f"**The two fsync p50s differ by {fsync['spread']}x (more than "
                      f"{FSYNC_SPREAD_MAX:g}x): the paced durable check is not conclusive in this "
                      "run.**")
    n = max((len(g.get("rounds", [])) for g in goals), default=0)
    md += ["", f"Issue 16's targets. Those on the paced rows (100 B; 1 KiB at 10,000/s), the "
           f"1 KiB send_batch pair and the defaults against the tuned settings are the median of "
           f"{n} alternated rounds (each round's value in the last column: its own ratio, within "
           "the round); the others one case each.", "",
           "| issue 16 target | value | goal | met | of goal | rounds: each round's value |",
           "|---|---|---|---|---|---|"]
    for g in goals:
        met = g.get("note") or ("-" if g["met"] is None else ("yes" if g["met"] else "no"))
        rs = g.get("rounds") or []
        md.append(f"| {g['target']} | {g['value']} | {g['goal']} | {met} | {g.get('of_goal', '')} "
                  f"| {len(rs)}: {', '.join(str(v) for v in rs)} |" if rs else
                  f"| {g['target']} | {g['value']} | {g['goal']} | {met} | {g.get('of_goal', '')} | |")
    return md


def floor_table(rows: list[dict[str, Any]]) -> list[str]:
    """The paced 1 -> 1 rows (this section's rounds at 1,000 and 10,000/s, 100 B, and at
    10,000/s, 1 KiB; the main latency runs' single case for a rate and size the rounds do not
    cover, e.g. an older run's 1 KiB rows)
    against Redis Streams and the relay floor of the same round, rate and size: per system the
    median over the rounds with each round's value in brackets; then the floor against the goal."""
    def paced_row(r: dict[str, Any]) -> bool:
        return (r["mode"] == "latency" and r.get("topology") == "1->1"
                and r.get("rate") in PACED_RATES and not r.get("errors"))

    mine = [r for r in rows if paced_row(r) and r.get("section") == "paced"]
    covered = {(r["rate"], r["size"]) for r in mine}
    # a main latency row is its own round, apart from this section's (round -1)
    main = [dict(r, round=-1) for r in rows if paced_row(r) and "section" not in r
            and (r["rate"], r["size"]) not in covered]
    paced = mine + main
    if not paced:
        return []
    md = ["", "Paced, 1 -> 1, against Redis Streams and the relay floor (`unix-socket-relay`: "
          "the bare socket with `socat` in the middle; bench/floor.py); each ratio within its "
          "round, the median over the rounds and each round's value in brackets:", "",
          "| rate | size | system | rounds | CPU us/msg (all) | server us/msg | server wake-ups / "
          "reads / writes per msg | CPU / Redis | CPU / floor | server / floor's |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    by: dict[tuple[int, int, str], dict[str, list[float]]] = {}
    for r, x in zip(paced, floor.annotate(paced), strict=True):
        d = by.setdefault((r["rate"], r["size"], r["system"]), {})
        figures = {"cpu": r.get("cpu_us_per_msg"), "server": r.get("cpu_us_server"), **x,
                   **{k: r.get(f"server_{k}_per_msg") for k in ("wakeups", "syscr", "syscw")}}
        for k, v in figures.items():
            if v is not None:
                d.setdefault(k, []).append(v)
    for (rate, size, system), d in sorted(by.items()):
        md.append("| " + " | ".join((
            str(rate), str(size), system, str(len(d.get("cpu", []))), _cell(d.get("cpu"), 1),
            _cell(d.get("server"), 1),
            " / ".join(_cell(d.get(k), 2, rounds=False) for k in ("wakeups", "syscr", "syscw")),
            *(_cell(d.get(k), 2) for k in ("per_redis", "per_floor", "server_per_floor")))) + " |")
    return [*md, "", *floor.render_verdicts(floor.verdicts(paced))]


def _cell(vs: list[float] | None, digits: int, rounds: bool = True) -> str:
    """The median; with more than one round, each round's value in brackets."""
    if not vs:
        return "-"
    med = f"{statistics.median(vs):.{digits}f}"
    if len(vs) == 1 or not rounds:
        return med
    return f"{med} (" + ", ".join(f"{v:.{digits}f}" for v in vs) + ")"
