"""The relay floor (issue 16): what a process in the middle costs on this machine before it does
any broker work, and every system's paced cost as a ratio to it and to Redis Streams.

The floor row, `unix-socket-relay` (bench/peers.py `SocatRelay`), is the bare Unix socket with
`socat -u` between producer and consumer: the same paced producer and the same consumer as the
`unix-socket` row, plus one process woken per message that only forwards bytes. Its CPU of all
processes per message is the least any broker that wakes per message can cost here; its relay's
CPU per message is the least for the server part ("server us/msg" of the other rows).

Issue 16's goal is CPU of all processes per message at most 0.5 x Redis Streams' in the same run:
where the floor itself is above that, no broker with a process woken per message reaches it on
this machine.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import Any

FLOOR = "unix-socket-relay"
REDIS = "redis-streams"
GOAL = 0.5  # issue 16: CPU per message at most this times Redis Streams'

Group = Callable[[dict[str, Any]], Any]


def _group(r: dict[str, Any]) -> tuple[Any, ...]:
    # rows comparable with each other: one round of one rate, size and topology
    return (r.get("round", 0), r.get("rate"), r.get("size"), r.get("topology", "1->1"),
            r.get("mode", "latency"))


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if a is not None and b else None


def annotate(rows: list[dict[str, Any]], group: Group = _group) -> list[dict[str, Any]]:
    """For each row, its ratios to the Redis and floor rows of the same group (round, rate,
    size): `per_redis`, `per_floor` (CPU of all processes per message) and
    `server_per_floor` (server CPU per message against the relay's). None where a side is
    missing or measured nothing."""
    out = []
    for r in rows:
        same = [x for x in rows if group(x) == group(r)]
        redis = next((x for x in same if x["system"] == REDIS), None)
        floor = next((x for x in same if x["system"] == FLOOR), None)
        cpu = r.get("cpu_us_per_msg")
        out.append({
            "per_redis": _ratio(cpu, redis.get("cpu_us_per_msg") if redis else None),
            "per_floor": _ratio(cpu, floor.get("cpu_us_per_msg") if floor else None),
            "server_per_floor": _ratio(r.get("cpu_us_server"),
                                       floor.get("cpu_us_server") if floor else None)})
    return out


def verdict(floor_cpu: float | None, floor_server: float | None, redis_cpu: float | None,
            redis_server: float | None) -> dict[str, Any]:
    """Whether the goal is within reach of a broker woken per message: the floor's CPU of all
    processes per message against GOAL x Redis Streams' (`floor_per_goal` <= 1: reachable, with
    `budget_us` left for the broker's own work beyond forwarding; > 1: not even a relay reaches
    it), and the relay's own CPU against redis-server's."""
    goal = GOAL * redis_cpu if redis_cpu else None
    per_goal = _ratio(floor_cpu, goal)
    return {"floor_us": floor_cpu, "floor_server_us": floor_server, "redis_us": redis_cpu,
            "redis_server_us": redis_server, "goal_us": goal,
            "floor_per_redis": _ratio(floor_cpu, redis_cpu),
            "floor_server_per_redis_server": _ratio(floor_server, redis_server),
            "floor_per_goal": per_goal,
            "reachable": None if per_goal is None else per_goal <= 1,
            "budget_us": None if goal is None or floor_cpu is None else goal - floor_cpu}


def verdicts(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One verdict per (rate, size): medians over the rounds of the floor's and Redis's rows."""
    by: dict[tuple[Any, Any], dict[str, list[float]]] = {}
    for r in rows:
        if r["system"] not in (FLOOR, REDIS) or r.get("mode", "latency") != "latency":
            continue
        if r.get("topology", "1->1") != "1->1" or r.get("cpu_us_per_msg") is None:
            continue
        d = by.setdefault((r.get("rate"), r["size"]), {})
        d.setdefault(f"{r['system']}/all", []).append(r["cpu_us_per_msg"])
        d.setdefault(f"{r['system']}/server", []).append(r.get("cpu_us_server") or 0.0)
    out = []
    for (rate, size), d in sorted(by.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1])):
        def med(key: str, d: dict[str, list[float]] = d) -> float | None:
            return statistics.median(d[key]) if d.get(key) else None
        v = verdict(med(f"{FLOOR}/all"), med(f"{FLOOR}/server"), med(f"{REDIS}/all"),
                    med(f"{REDIS}/server"))
        v.update(rate=rate, size=size, rounds=len(d.get(f"{FLOOR}/all", [])))
        out.append(v)
    return out


def _f(v: Any, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def render_verdicts(vs: list[dict[str, Any]]) -> list[str]:
    md = ["| rate | size | relay floor CPU us/msg (all) | relay's own us/msg | Redis Streams us/msg "
          "(redis-server) | 0.5 x Redis | floor / Redis | floor / (0.5 x Redis) | reachable by a "
          "broker woken per message |", "|---|---|---|---|---|---|---|---|---|"]
    for v in vs:
        reach = "-" if v["reachable"] is None else (
            f"yes, {v['budget_us']:.0f} us/msg left for the broker's own work" if v["reachable"]
            else f"no: the relay alone is {v['floor_per_goal']:.2f} x the goal")
        md.append(f"| {v['rate']} | {v['size']} | {_f(v['floor_us'])} | {_f(v['floor_server_us'])} "
                  f"| {_f(v['redis_us'])} ({_f(v['redis_server_us'])}) | {_f(v['goal_us'])} "
                  f"| {_f(v['floor_per_redis'], 2)} | {_f(v['floor_per_goal'], 2)} | {reach} |")
    return md
