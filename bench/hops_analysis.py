"""bench/hops.py's events, read back: their format (one struct per event, written by each process
at exit), the kinds, and the analysis of a case's three files into each hop's medians (analyse)
and the report (render). No I/O but reading the event files."""

from __future__ import annotations

import os
import statistics
import struct
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

_EV = struct.Struct("<Bqqqq")
PB, PW, SD, SE, SQ, SP, SF, SW, CF, CR, GCA, GCB, SH, SR, PA, GCX = range(1, 17)


def _load(tdir: str, role: str) -> list[tuple[int, int, int, int, int]]:
    out: list[tuple[int, int, int, int, int]] = []
    for f in Path(tdir).glob(f"{role}-*.ev"):
        data = f.read_bytes()
        out += list(_EV.iter_unpack(data))
    out.sort(key=lambda e: e[1])
    return out


HOPS = ("held", "write", "sup_wake", "append", "to_answer", "ring_wait", "cons_wake", "decode")


def analyse(tdir: str, transport: str, size: int, rate: int) -> dict[str, Any]:
    from edgebus.protocol import messages as M

    prod, sup, cons = _load(tdir, "prod"), _load(tdir, "sup"), _load(tdir, "cons")
    produce = int(M.Api.PRODUCE)
    fetch_keys = {int(M.Api.FETCH), int(getattr(M.Api, "FETCH_STANDING", -1))}
    # producer: the nth batch written holds sequence numbers [start, start + count)
    pb = [e for e in prod if e[0] == PB]
    pw = [e for e in prod if e[0] == PW]
    batch_of: list[tuple[int, int, int]] = []  # (first seq, t start, t written)
    s = 0
    for b, w in zip(pb, pw, strict=False):
        batch_of.append((s, b[1], w[1]))
        s += b[2]
    # supervisor: PRODUCE dispatches in order; the consumer's connection answers
    prod_conn = next((e[2] for e in sup if e[0] == SD and e[3] == produce), None)
    cons_conn = next((e[2] for e in sup if e[0] == SD and e[3] in fetch_keys), None)
    sd = [e[1] for e in sup if e[0] == SD and e[2] == prod_conn and e[3] == produce]
    se = [e[1] for e in sup if e[0] == SE and e[2] == prod_conn and e[3] == produce]
    answers: dict[tuple[int, int], int] = {}  # (corr, nth) -> t queued
    nth: dict[int, int] = defaultdict(int)
    for e in sup:
        if e[0] == SQ and e[2] == cons_conn:
            answers[(e[3], nth[e[3]])] = e[1]
            nth[e[3]] += 1
    # pended answers: the k-th SP on the consumer's link is flushed by the SF events in order
    pend_t = [e[1] for e in sup if e[0] == SP and e[2] == cons_conn]
    flush_t: list[int] = []
    for e in sup:
        if e[0] == SF and e[2] == cons_conn:
            flush_t += [e[1]] * e[3]
    # consumer: frames with their offsets, records with their return time
    frame_of: dict[int, tuple[int, int]] = {}  # offset -> (t frame read, t queued at sup)
    cnth: dict[int, int] = defaultdict(int)
    for e in cons:
        if e[0] == CF:
            k = (e[2], cnth[e[2]])
            cnth[e[2]] += 1
            if e[3] >= 0:
                tq = answers.get(k, 0)
                for off in range(e[3], e[4] + 1):
                    frame_of[off] = (e[1], tq)
    # which answers were pended, and when they reached the ring (the SQ before each SP)
    sq_cons = sorted(t for t in answers.values())
    pended: dict[int, int] = {}
    j = 0
    for tp, tf in zip(pend_t, flush_t, strict=False):
        while j + 1 < len(sq_cons) and sq_cons[j + 1] <= tp:
            j += 1
        if sq_cons and sq_cons[j] <= tp:
            pended[sq_cons[j]] = tf
    rows = []
    bi = 0
    for e in cons:
        if e[0] != CR:
            continue
        off, seq, t_send, t_ret = e[2], e[3], e[4], e[1]
        while bi + 1 < len(batch_of) and batch_of[bi + 1][0] <= seq:
            bi += 1
        if not batch_of or bi >= len(sd) or off not in frame_of:
            continue
        _first, t_pb, t_pw = batch_of[bi]
        t_read, t_q = frame_of[off]
        if not t_q:
            continue
        t_ring = pended.get(t_q, t_q)
        # An answer given inside the PRODUCE's dispatch (a parked fetch) ends the append hop.
        t_app = min(se[bi], t_q) if t_q >= sd[bi] else se[bi]
        rows.append((t_ret - t_send, (t_pb - t_send, t_pw - t_pb, sd[bi] - t_pw, t_app - sd[bi],
                                      max(0, t_q - t_app), t_ring - t_q, t_read - t_ring,
                                      t_ret - t_read), seq))
    n = len(rows)
    rows = rows[n // 10:]  # warm-up, as bench.run
    rows.sort(key=lambda r: r[0])

    def band(lo: float, hi: float) -> dict[str, Any]:
        sel = rows[int(lo * len(rows)):max(int(lo * len(rows)) + 1, int(hi * len(rows)))]
        return {"total_us": round(statistics.median(r[0] for r in sel) / 1000, 1),
                **{h: round(statistics.median(r[1][i] for r in sel) / 1000, 1)
                   for i, h in enumerate(HOPS)}}

    # Collections while records flowed only (the start's full collections are not traffic's).
    t_first = min((e[1] for e in prod if e[0] == PB), default=0)
    t_last = max((e[1] for e in cons if e[0] == CR), default=0)

    def gcs(evs: list[tuple[int, int, int, int, int]]) -> str:
        """Collections per generation: count, median and longest pause (wall time, us)."""
        out = []
        for gen in (0, 1, 2):
            g = sorted(e[3] for e in evs
                       if e[0] == GCA and e[2] == gen and t_first <= e[1] <= t_last)
            if g:
                out.append(f"g{gen} {len(g)}x {g[len(g) // 2] / 1000:.0f}/{g[-1] / 1000:.0f}")
        return " ".join(out) or "0"

    out: dict[str, Any] = {"transport": transport, "size": size, "rate": rate, "records": len(rows),
                           "variant": "", "matched": n}
    # what each process stamped: check_measured names the ones a record's way did not pass
    out["stamps"] = {"the producer's batches written (_send_one, _send_batch)": len(batch_of),
                     "the supervisor's PRODUCE dispatches (Dispatcher.dispatch_frame)": len(sd),
                     "answers queued for the consumer (Connection.queue)": len(sq_cons),
                     "frames the consumer read (ShmRings.read, SyncChannel._frames)":
                         sum(1 for e in cons if e[0] == CF and e[3] >= 0),
                     "records out of the consumer's poll()": sum(1 for e in cons if e[0] == CR)}
    if rows:
        out["p50"] = band(0.45, 0.55)
        out["p99"] = band(0.985, 0.995)
    out["held"] = sum(1 for e in sup if e[0] == SH)
    out["resumes"] = sum(1 for e in sup if e[0] == SR)
    out["pended"] = len(pend_t)
    out["answers"] = len(sq_cons)
    out["batches"] = len(batch_of)
    out["gc"] = {"producer": gcs(prod), "supervisor": gcs(sup), "consumer": gcs(cons)}
    full = next((e for e in sup if e[0] == GCX), None)
    out["sup_full_gc"] = (f"{full[2] / 1000:.0f} / {full[3] / 1000:.0f} us, {full[4]} objects"
                          if full else "-")
    return out


class NothingMeasured(RuntimeError):
    """A case whose stamps account for too few of the records its consumer received."""


MIN_MATCHED = 0.9  # of the records received; on the Python paths every record is matched


def check_measured(r: dict[str, Any]) -> None:
    """Raise NothingMeasured, naming the stamps that fell short, when fewer than MIN_MATCHED of
    the records the consumer received (r["received"]) have every hop: a record went by a way
    none of the wrapped methods is on (a C path), and its hops would be a table of nothing."""
    received = r.get("received", 0)
    if not received:
        raise NothingMeasured("the consumer received no record")
    if r["matched"] >= MIN_MATCHED * received:
        return
    short = [f"{k}: {v}" for k, v in r["stamps"].items() if v < MIN_MATCHED * received
             and not k.startswith("answers")] or [f"{k}: {v}" for k, v in r["stamps"].items()]
    # (answers carry many records each: their count is no measure of the records stamped)
    raise NothingMeasured(
        f"{r['matched']} of {received} records received have their hops (at least "
        f"{MIN_MATCHED:.0%} needed); stamped too few: {'; '.join(short)}. A record's way no "
        "longer passes the methods bench/hops.py wraps (a C path on?)")


def render(results: list[dict[str, Any]], argv: list[str]) -> list[str]:
    md = [f"# issue 16: per-hop latency, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}", "",
          f"`python -m bench.hops {' '.join(argv)}`", "",
          "The Python paths (the C send, the C data plane and parked loop, the C take off): the "
          "default paths call none of the methods stamped; bench/tail_where.py measures those.", "",
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end. Medians of "
          "each hop over the records around the p50 (45-55th percentile of the total) and the "
          "p99 (98.5-99.5th); microseconds.", "",
          "| round | path | variant | size | band | total | " + " | ".join(HOPS) + " |",
          "|---|---|---|---|---|---|" + "---|" * len(HOPS)]
    for r in results:
        for b in ("p50", "p99"):
            if b in r:
                md.append(f"| {r['round']} | {r['transport']} | {r['variant']} | {r['size']} | {b} "
                          f"| {r[b]['total_us']} | " + " | ".join(str(r[b][h]) for h in HOPS) + " |")
    rounds = {r["round"] for r in results}
    if len(rounds) > 1:
        md += ["", "Medians over the rounds:", "",
               "| path | variant | size | band | total | " + " | ".join(HOPS) + " |",
               "|---|---|---|---|---|" + "---|" * len(HOPS)]
        keys = sorted({(r["transport"], r["variant"], r["size"]) for r in results})
        for t, v, size in keys:
            same = [r for r in results if (r["transport"], r["variant"], r["size"]) == (t, v, size)]
            for b in ("p50", "p99"):
                got = [r[b] for r in same if b in r]
                if got:
                    md.append(f"| {t} | {v} | {size} | {b} | "
                              + " | ".join(f"{statistics.median(g[h] for g in got):.0f}"
                                           for h in ("total_us", *HOPS)) + " |")
    md += ["", "| round | path | variant | size | records | batches | answers to the consumer "
           "| held answers (standing) | resumes | pended | GC per generation, count x median/longest us: "
           "producer / supervisor / consumer | the supervisor's full collection at exit, CPU "
           "as is / unfrozen |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        g = r["gc"]
        md.append(f"| {r['round']} | {r['transport']} | {r['variant']} | {r['size']} | "
                  f"{r['records']} | {r['batches']} | "
                  f"{r['answers']} | {r['held']} | {r['resumes']} | {r['pended']} | "
                  f"{g['producer']} / {g['supervisor']} / {g['consumer']} | "
                  f"{r.get('sup_full_gc', '-')} |")
    return md
