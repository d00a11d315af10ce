"""`python -m bench --acl [--repeat N]`: ACL on against ACL off, in one run (issue 15's 3 % goal).

One pair of on/off figures moves by several per cent with whatever else the machine runs (a
quiet machine gave x0.93 and x1.07 for two cases whose access checks are the same), which is
more than the effect to be measured. So each edgebus case is run N times against each
supervisor, the order alternated from one round to the next (off-on, on-off, ...), and the
report gives, per case, the median of the N on/off ratios of throughput and of the
supervisor's CPU per message (the steadier of the two: it does not depend on how the other
processes were scheduled), with their range.
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any

# The keys that make two rows the same case.
_CASE = ("api", "size", "topology", "mode")


def rounds(systems: list[tuple[str, str, Any, Any]], repeat: int
           ) -> list[tuple[int, tuple[str, str, Any, Any]]]:
    """The systems to run, as (round, system): everything once in round 0 and the edgebus
    pairs (name, name + "-acl", adjacent in `systems`) again in rounds 1..repeat-1, the pair's
    order swapped in odd rounds so that neither side always runs first."""
    out = [(0, s) for s in systems]
    pairs = [(a, b) for a, b in itertools.pairwise(systems)
             if b[0] == a[0] + "-acl" and b[1] == a[1]]
    for rnd in range(1, repeat):
        for a, b in pairs:
            out += [(rnd, b), (rnd, a)] if rnd % 2 else [(rnd, a), (rnd, b)]
    return out


def _ratio(on: dict[str, Any], off: dict[str, Any], key: str) -> float | None:
    a, b = on.get(key), off.get(key)
    return a / b if a and b else None


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per edgebus case with both sides: the on/off ratios of every round and their medians."""
    by: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        by[(r["system"], r.get("round", 0), *tuple(r[k] for k in _CASE))] = r
    cases: dict[tuple[Any, ...], dict[str, list[float]]] = {}
    for (system, rnd, *case), on in by.items():
        if not system.endswith("-acl"):
            continue
        off = by.get((system[:-4], rnd, *case))
        if off is None:
            continue
        c = cases.setdefault((system[:-4], *case), {"throughput": [], "sup_cpu": []})
        for name, key in (("throughput", "msgs_per_s"), ("sup_cpu", "supervisor_us_per_msg")):
            v = _ratio(on, off, key)
            if v is not None:
                c[name].append(v)
    out = []
    for (system, api, size, topo, mode), c in cases.items():
        row: dict[str, Any] = {"system": system, "api": api, "size": size, "topology": topo,
                               "mode": mode, "rounds": len(c["sup_cpu"]) or len(c["throughput"])}
        for name, vals in c.items():
            if vals:
                row[name] = {"median": round(statistics.median(vals), 3),
                             "min": round(min(vals), 3), "max": round(max(vals), 3),
                             "each": [round(v, 3) for v in vals]}
        out.append(row)
    return out


def notes(summary: list[dict[str, Any]]) -> list[str]:
    out = []
    for s in summary:
        parts = []
        if "throughput" in s:
            t = s["throughput"]
            parts.append(f"throughput x{t['median']:.3f} (range {t['min']:.3f}-{t['max']:.3f})")
        if "sup_cpu" in s:
            c = s["sup_cpu"]
            parts.append(f"supervisor CPU per message x{c['median']:.3f} "
                         f"(range {c['min']:.3f}-{c['max']:.3f})")
        out.append(f"ACL on/off {s['system']} {s['api']} {s['size']} B {s['topology']} "
                   f"{s['mode']}, median of {s['rounds']} alternated round(s): " + "; ".join(parts))
    return out
