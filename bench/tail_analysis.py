"""bench/tail_where.py's stamps, read back: a case's three files (pickled by each process at its
exit) into where its slowest records waited (analyse) and a report row (render_row, HEAD). No I/O
but reading the files."""

from __future__ import annotations

import pickle
import statistics
from array import array
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Any

# park.c's to_py counters (links handed to Python, by reason) and its wait's returns, in order
_TO_PY = ("not_fast", "declined", "ring", "after_append", "spin", "standing", "socket")
_WHY = ("loop", "timeout", "python", "eintr", "error")


def _overlap(spans: list[tuple[int, int]], starts: list[int], a: int, b: int) -> int:
    """ns of [a, b) covered by the sorted, disjoint spans (starts: their starts)."""
    i = max(0, bisect_right(starts, a) - 1)
    tot = 0
    while i < len(spans) and spans[i][0] < b:
        lo, hi = max(a, spans[i][0]), min(b, spans[i][1])
        if hi > lo:
            tot += hi - lo
        i += 1
    return tot


def analyse(tdir: str) -> dict[str, Any]:
    def load(role: str) -> dict[str, Any]:
        with open(Path(tdir) / f"{role}.pkl", "rb") as f:
            d: dict[str, Any] = pickle.load(f)
        return d

    prod, cons, sup = load("prod"), load("cons"), load("sup")
    due, s0, s1 = (array("q", b) for b in prod["send"])
    seqs, recv, polls = (array("q", b) for b in cons["recv"])
    # the supervisor's events while the paced records flowed (not a --preload-mb's before them)
    lo, hi = due[0], max(recv) if recv else due[-1]
    park = [e for e in sup["park"] if lo <= e[0] <= hi]
    # the supervisor's Python turns: from a parked wait's return to the next wait's entry,
    # with the returning wait's why and links handed to Python
    turns = [(park[i][1], park[i + 1][0], park[i][2], park[i][3]) for i in range(len(park) - 1)]
    tspans = [(a, b) for a, b, _w, _t in turns]
    tstarts = [a for a, _b in tspans]
    gcs = sorted((a, b) for role in (prod, cons, sup) for a, b, _g in role["gc"])
    gstarts = [a for a, _b in gcs]
    holds = sorted(t for t in sup["hold"] if lo <= t <= hi)
    # the consumer inside poll() (waiting, or taking what came), per poll that returned records
    pspans = [(polls[i], polls[i + 1]) for i in range(0, len(polls), 3)]
    pstarts = [a for a, _b in pspans]
    lat = []
    for seq, t in zip(seqs, recv, strict=True):
        if 0 <= seq < len(due):
            lat.append((t - due[seq], seq, t))
    lat = lat[len(lat) // 10:]  # warm-up, as bench/run.py
    if not lat:
        return {"records": 0, "received": len(seqs), "sent": len(due)}
    ordered = sorted(x[0] for x in lat)
    # send() returned -> out of poll(): the supervisor's and the consumer's part alone (a
    # producer descheduled on a loaded machine is in the total's tail, not here)
    transits = sorted(t - s1[seq] for _l, seq, t in lat)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    slow = [x for x in lat if x[0] >= p99]
    classes: dict[str, int] = {}
    reasons: dict[str, int] = {}
    parts: dict[str, list[int]] = {"late": [], "send": [], "transit": [], "python": []}
    for _total, seq, t in slow:
        late, send, transit = s0[seq] - due[seq], s1[seq] - s0[seq], t - s1[seq]
        py = _overlap(tspans, tstarts, s1[seq], t)
        for k, v in (("late", late), ("send", send), ("transit", transit), ("python", py)):
            parts[k].append(v)
        if max(late, send) >= transit:
            cls = "late" if late >= send else "send"
        elif bisect_left(holds, t) > bisect_left(holds, s1[seq]):
            cls = "transit, fetch held"
        elif py * 2 >= transit:
            cls = "transit, supervisor in Python"
            # the longest turn within it: its return's reasons
            i = max(0, bisect_right(tstarts, s1[seq]) - 1)
            best = None
            while i < len(turns) and turns[i][0] < t:
                if best is None or (turns[i][1] - turns[i][0]) > (best[1] - best[0]):
                    best = turns[i]
                i += 1
            if best is not None:
                why = _WHY[best[2]]
                handed = "+".join(_TO_PY[j] for j, n in enumerate(best[3]) if n) or "-"
                key = f"{why}: {handed}"
                reasons[key] = reasons.get(key, 0) + 1
        elif _overlap(gcs, gstarts, s1[seq], t):
            cls = "transit, a collection"
        elif 2 * (transit - _overlap(pspans, pstarts, s1[seq], t)) >= transit:
            cls = "transit, consumer busy"
        else:
            cls = "transit, parked"
        classes[cls] = classes.get(cls, 0) + 1
    # Python turns overall: how many, how long, by reason
    turn_len = sorted(b - a for a, b in tspans)
    by_reason: dict[str, int] = {}
    for _a, _b, w, t in turns:
        key = f"{_WHY[w]}: " + ("+".join(_TO_PY[j] for j, n in enumerate(t) if n) or "-")
        by_reason[key] = by_reason.get(key, 0) + 1
    n = len(due)
    held = sum(1 for _l, seq, t in lat if bisect_left(holds, t) > bisect_left(holds, s1[seq]))
    big_polls = sorted(polls[i + 2] for i in range(0, len(polls), 3))
    return {
        "records": len(lat), "received": len(seqs), "sent": len(due),
        "p50": round(p50 / 1000), "p99": round(p99 / 1000),
        "transit_p50": round(transits[len(transits) // 2] / 1000),
        "transit_p99": round(transits[int(0.99 * len(transits))] / 1000),
        "slow": len(slow), "classes": classes, "reasons": reasons,
        "parts_median_us": {k: round(statistics.median(v) / 1000) if v else None
                            for k, v in parts.items()},
        "turns_per_k": round(1000 * len(turns) / n, 1),
        "turn_p50_us": round(turn_len[len(turn_len) // 2] / 1000, 1) if turn_len else None,
        "turn_p99_us": round(turn_len[int(0.99 * len(turn_len))] / 1000, 1) if turn_len else None,
        "turn_reasons_per_k": {k: round(1000 * v / n, 1) for k, v in
                               sorted(by_reason.items(), key=lambda kv: -kv[1])[:6]},
        "holds_per_k": round(1000 * len(sup["hold"]) / n, 1),
        "held_records_pct": round(100 * held / len(lat), 2),
        "resumes_per_k": round(1000 * len(sup["resume"]) / n, 1),
        "ticks": _longest([x for x in sup.get("tick", []) if lo <= x[0] <= hi], n),
        "after_us_p99": _p99_us([x for x in sup.get("after", []) if lo <= x[0] <= hi]),
        "ring_why": sup.get("ring_why"),  # (over the supervisor's whole run)
        "index_syncs": len(sup["index"]),
        "index_sync_us_max": round(max((b - a for a, b, _n in sup["index"]), default=0) / 1000),
        "index_sync_us_p50": round(statistics.median([b - a for a, b, _n in sup["index"]]) / 1000, 1)
        if sup["index"] else None,
        "index_entries_per_sync": round(statistics.fmean([k for _a, _b, k in sup["index"]]), 1)
        if sup["index"] else None,
        "gc": {role: len(d["gc"]) for role, d in (("prod", prod), ("sup", sup), ("cons", cons))},
        "polls_per_k": round(1000 * len(big_polls) / n, 1),
        "poll_records_max": big_polls[-1] if big_polls else 0,
    }


def _p99_us(spans: list[tuple[int, int]]) -> float | None:
    d = sorted(b - a for a, b in spans)
    return round(d[int(0.99 * len(d))] / 1000, 1) if d else None


def _longest(ticks: list[tuple[int, int, str]], n: int) -> str:
    """Per service: its ticks per 1,000 messages, median and longest us."""
    by: dict[str, list[int]] = {}
    for a, b, name in ticks:
        by.setdefault(name, []).append(b - a)
    return ", ".join(f"{k} {1000 * len(v) / n:.1f}x {statistics.median(v) / 1000:.0f}/"
                     f"{max(v) / 1000:.0f}" for k, v in sorted(by.items(), key=lambda kv: -max(kv[1])))


def render_row(r: dict[str, Any]) -> str:
    cls = ", ".join(f"{k} {v}" for k, v in sorted(r.get("classes", {}).items(),
                                                   key=lambda kv: -kv[1]))
    why = ", ".join(f"{k} {v}" for k, v in sorted(r.get("reasons", {}).items(),
                                                   key=lambda kv: -kv[1]))
    pm = r.get("parts_median_us", {})
    turns = ", ".join(f"{k} {v}" for k, v in r.get("turn_reasons_per_k", {}).items())
    return (f"| {r.get('round')} | {r.get('variant')} | {r.get('size')} | {r.get('load', 0):.1f} "
            f"| {r.get('p50')} | {r.get('p99')} | {r.get('transit_p50')} | {r.get('transit_p99')} "
            f"| {r.get('slow')} | {cls} | {why} | "
            f"{pm.get('late')} / {pm.get('send')} / {pm.get('transit')} / {pm.get('python')} | "
            f"{r.get('turns_per_k')} ({turns}) | {r.get('turn_p50_us')} / {r.get('turn_p99_us')} | "
            f"{r.get('holds_per_k')} / {r.get('resumes_per_k')} / {r.get('held_records_pct')} % | "
            f"{r.get('index_syncs')} x {r.get('index_entries_per_sync')} entries, "
            f"{r.get('index_sync_us_p50')} / {r.get('index_sync_us_max')} us | "
            f"{' / '.join(str(v) for v in r.get('gc', {}).values())} | {r.get('polls_per_k')} | "
            f"{r.get('after_us_p99')} | {r.get('ticks')} |")


HEAD = ["| round | variant | size | load | p50 us | p99 us | transit p50 us | transit p99 us "
        "| records >= p99 | where they waited "
        "| the supervisor's return before the longest Python turn | their medians: late / send / "
        "transit / supervisor in Python, us | Python turns per 1,000 msgs (by the return's "
        "reason) | turn p50 / p99 us | standing holds / resumes per 1,000 / records held | "
        "sync-backs writing index entries x entries each, median / longest us | "
        "collections prod / sup / cons | polls with records per 1,000 | sync-back (Park._after) "
        "p99 us | the loop's timers: per 1,000 msgs, median / longest us |",
        "|" + "---|" * 20]
