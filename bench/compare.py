"""Compare benchmark reports of two versions, case by case, as ratios.

    .venv/bin/python -m bench.compare --before OLD.json [OLD2.json ...] --after NEW.json [NEW2.json ...]
        [--limit 5] [--out bench/results/compare.md]

Each side may have several reports (runs of `python -m bench` alternated between the versions on
one machine): a case then counts its best figure on each side (highest msg/s, lowest p50/p99),
which is what the code can do with the least interference from the rest of the machine. Ratios
are after / before for msg/s (above 1 is faster) and before / after for latencies (above 1 is
faster too), so one column reads the same way everywhere. A case is flagged when it is more than
--limit percent slower. The peers (mp-queue, unix-socket, redis-streams) run the same code in
both versions: their ratios show how much the machine itself moved between runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

Key = tuple[str, str, int, str, str]  # system, api, size, topology, mode


def _cases(paths: list[Path]) -> dict[Key, list[dict[str, Any]]]:
    out: dict[Key, list[dict[str, Any]]] = {}
    for p in paths:
        for r in json.loads(p.read_text())["results"]:
            key = (r["system"], r["api"], r["size"], r["topology"], r["mode"])
            out.setdefault(key, []).append(r)
    return out


def _best(rows: list[dict[str, Any]], field: str, high: bool) -> float | None:
    vals = [r[field] for r in rows if r.get(field) is not None]
    if not vals:
        return None
    return max(vals) if high else min(vals)


def compare(before: list[Path], after: list[Path], limit_pct: float) -> tuple[str, int]:
    b, a = _cases(before), _cases(after)
    lines = [
        f"before: {', '.join(str(p) for p in before)}",
        f"after: {', '.join(str(p) for p in after)}",
        "",
        "| system | api | size | topology | measure | before | after | speed ratio | |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    slower = 0
    for key in [k for k in b if k in a]:
        system, api, size, topo, mode = key
        fields = [("msgs_per_s", True)] if mode == "throughput" else [("p50_us", False), ("p99_us", False)]
        for field, high in fields:
            vb, va = _best(b[key], field, high), _best(a[key], field, high)
            if not vb or not va:
                continue
            ratio = va / vb if high else vb / va
            flag = ""
            if ratio < 1 - limit_pct / 100:
                flag = f"slower by more than {limit_pct:g}%"
                if system.startswith("edgebus"):
                    slower += 1
                else:
                    flag += " (a peer: the machine moved)"
            lines.append(f"| {system} | {api} | {size} | {topo} | {field} | {vb:,.1f} | {va:,.1f} | "
                         f"{ratio:.3f} | {flag} |")
    lines.append("")
    lines.append(f"edgebus cases slower by more than {limit_pct:g}%: {slower}")
    return "\n".join(lines) + "\n", slower


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n")[0])
    ap.add_argument("--before", nargs="+", type=Path, required=True, help="reports of the old version")
    ap.add_argument("--after", nargs="+", type=Path, required=True, help="reports of the new version")
    ap.add_argument("--limit", type=float, default=5.0, help="percent slower that is flagged")
    ap.add_argument("--out", type=Path, help="also write the table to this file")
    opts = ap.parse_args(argv)
    text, _ = compare(opts.before, opts.after, opts.limit)
    print(text, end="")
    if opts.out is not None:
        opts.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
