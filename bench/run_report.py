"""The benchmark's report (bench/run.py): the results table, the issue's targets evaluated on a
run, and the markdown of latest.md."""

from __future__ import annotations

import sys
from typing import Any

from bench import cost


def table(rows: list[dict[str, Any]]) -> list[str]:
    head = ["system", "api", "size", "topology", "msg/s", "MB/s", "p50 us", "p99 us", "p99.9 us",
            "sup CPU s/M", "sup RSS MB", "CPU us/msg (all)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        def g(k: str, r: dict[str, Any] = r) -> str:
            v = r.get(k)
            return "" if v is None else f"{v:,}" if isinstance(v, int) else str(v)
        out.append("| " + " | ".join([
            r["system"], r["api"], str(r["size"]), r["topology"], g("msgs_per_s"), g("mb_per_s"),
            g("p50_us"), g("p99_us"), g("p999_us"), g("supervisor_cpu_s_per_M"),
            g("supervisor_rss_mb"), g("cpu_us_per_msg")])
            + (" | " + "; ".join(r["errors"]) if r.get("errors") else "") + " |")
    return out


def find(rows: list[dict[str, Any]], **kw: Any) -> dict[str, Any] | None:
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def targets(rows: list[dict[str, Any]], idle: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The issue's targets, evaluated on this run (100-byte records, 1 -> 1, acks=written)."""
    out = []

    def tp(system: str, api: str) -> float | None:
        r = find(rows, system=system, api=api, size=100, topology="1->1", mode="throughput")
        return r["msgs_per_s"] if r else None

    def lat(system: str, key: str) -> float | None:
        r = find(rows, system=system, size=100, topology="1->1", mode="latency")
        return r[key] if r else None

    def add(name: str, value: float | None, goal: float, better: str, unit: str) -> None:
        if value is None:
            out.append({"target": name, "value": None, "goal": goal, "met": None})
            return
        met = value >= goal if better == "higher" else value < goal
        ratio = value / goal if goal else None
        out.append({"target": name, "value": round(value, 2), "goal": goal, "unit": unit,
                    "met": met, "of_goal": round(ratio, 3) if ratio else None})

    add("shm send_batch records/s", tp("edgebus-shm", "batch"), 1_000_000, "higher", "msg/s")
    redis = tp("redis-streams", "batch")
    shm = tp("edgebus-shm", "batch")
    add("shm send_batch / Redis Streams", shm / redis if shm and redis else None, 20, "higher", "x")
    add("shm send() records/s", tp("edgebus-shm", "send"), 300_000, "higher", "msg/s")
    add("shm p50 at 10k msg/s", lat("edgebus-shm", "p50_us"), 20, "lower", "us")
    add("shm p99 at 10k msg/s", lat("edgebus-shm", "p99_us"), 200, "lower", "us")
    s50, k50 = lat("edgebus-shm", "p50_us"), lat("edgebus-socket", "p50_us")
    add("socket p50 / shm p50", k50 / s50 if s50 and k50 else None, 2, "higher", "x")
    add("idle supervisor CPU %", idle["supervisor_cpu_percent"] if idle else None, 0.5, "lower", "%")
    add("idle supervisor RSS, no client", idle.get("supervisor_rss_mb_no_clients") if idle else None,
        20, "lower", "MB")
    add("idle supervisor RSS, 10 clients", idle["supervisor_rss_mb"] if idle else None, 25, "lower",
        "MB")
    # Issue 12: the Kafka listener (confluent-kafka producer, acks=1, -> consumer).
    kt, tt = tp("kafka-edgebus", "send"), tp("kafka-tansu", "send")
    add("kafka listener records/s (librdkafka, acks=1)", kt, 300_000, "higher", "msg/s")
    add("kafka listener / Tansu", kt / tt if kt and tt else None, 2, "higher", "x")
    add("kafka listener p50 at 10k msg/s", lat("kafka-edgebus", "p50_us"), 1000, "lower", "us")
    return out


def render_md(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    md = [f"# edgebus benchmark ({'quick' if report['quick'] else 'full'}), {report['when']}", "",
          f"{m['cpus']} CPUs, {m['arch']}, Python {m['python']}, Linux {m['kernel']}, load average "
          f"{m.get('loadavg_before', ['?'])[0]} before / {m.get('loadavg_after', ['?'])[0]} after; "
          f"acks=written; throughput {report['settings']['throughput_seconds']} s per case; "
          f"latency at {report['settings']['latency_rate']:,} msg/s total for "
          f"{report['settings']['latency_seconds']} s per case (one-record API; one-way latency "
          "from each record's scheduled send time, the same for every system). "
          "Supervisor CPU/RSS only for edgebus rows.", ""]
    md += table(report["results"])
    if report.get("wear"):
        from bench import wear

        md += ["", "SD-card wear, 100 B records paced at 5,000/s (bench/wear.py):", ""]
        md += wear.table(report["wear"])
    if report["idle"]:
        i = report["idle"]
        md += ["", f"Idle: a fresh supervisor with {i['clients']} connected shm clients (5 Admin, "
               f"5 Consumers sitting in poll(), i.e. a 500 ms long-poll each), {i['seconds']} s: "
               f"supervisor CPU {i['supervisor_cpu_s']} s = {i['supervisor_cpu_percent']}%, "
               f"RSS {i.get('supervisor_rss_mb')} MB (before any client connected: "
               f"{i.get('supervisor_rss_mb_no_clients')} MB); PSS {i.get('supervisor_pss_mb')} MB "
               f"({i.get('supervisor_pss_mb_no_clients')} MB)."]
    md += ["", "| target | value | goal | met | of goal |", "|---|---|---|---|---|"]
    for t in report["targets"]:
        met = "-" if t["met"] is None else ("yes" if t["met"] else "no")
        md.append(f"| {t['target']} | {t['value']} | {t['goal']} | {met} | {t.get('of_goal', '')} |")
    if report.get("cost"):
        c = report["cost"]
        md += cost.render(c["results"], c["fsync"], c["targets"], report["results"])
    for n in report["notes"]:
        md.append(f"\nNote: {n}")
    return md


def _progress(row: dict[str, Any]) -> None:
    what = (f"{row.get('msgs_per_s', 0):>10,} msg/s" if row["mode"] == "throughput"
            else f"p50 {row['p50_us']} us p99 {row['p99_us']} us")
    err = f"  ERRORS {row['errors']}" if row.get("errors") else ""
    print(f"  {row['system']:15} {row['api']:5} {row['size']:5} B {row['topology']:5} "
          f"{row['mode']:10} {what}{err}", file=sys.stderr, flush=True)
