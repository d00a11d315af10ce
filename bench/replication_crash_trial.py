"""The replicator's crash trial for minutes per target (tests/replication/crash_trial.py says what
it does and checks): SIGKILLs of the replicator, the source supervisor and the target, link cuts
and half-open links, at random moments in turn while producers send; then every acknowledged
record is looked for at the target (exactly once, in order, intact) and the replicator's status
is compared with what the target holds. Prints the counts and writes them, with the load
average, to bench/results/replication-crash-trial.json (one entry per target and seed, replaced
when run again) and .md.

    python -m bench.replication_crash_trial --seconds 180 [--target peer ...] [--seed 1]

Not a speed figure: what it reports are counts (records, faults, duplicates, losses), which the
machine's load does not change; the load is written down because it changes how many records
flow between faults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.replication.crash_trial import TARGETS, run_trial

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", action="append", choices=TARGETS,
                    help="a target (repeat; default: every one)")
    ap.add_argument("--seconds", type=float, default=180.0, help="traffic and faults per target")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    out = RESULTS / "replication-crash-trial.json"
    runs: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    for name in args.target or TARGETS:
        load_before = os.getloadavg()
        with tempfile.TemporaryDirectory(prefix=f"crash-trial-{name}-") as tmp:
            c = run_trial(name, Path(tmp), args.seconds, seed=args.seed)
        row = {**dataclasses.asdict(c), "clean": c.clean, "seed": args.seed,
               "load_before": [round(x, 2) for x in load_before],
               "load_after": [round(x, 2) for x in os.getloadavg()],
               "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        runs[f"{name} seed {args.seed}"] = row
        print(json.dumps(row))
        out.write_text(json.dumps(runs, indent=2) + "\n")
    write_md(runs)


def write_md(runs: dict[str, Any]) -> None:
    lines = ["# Replicator crash trial (python -m bench.replication_crash_trial)", "",
             "| target | s | acked records | faults | duplicates | losses | acked lost | "
             "out of order | altered | status mismatches | status ahead (of samples) | "
             "load 1-min before/after | when |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in runs.items():
        name = key if "seed" in key else f"{key} seed {r['seed']}"
        faults = ", ".join(f"{k} {v}" for k, v in r["kills"].items())
        lines.append(f"| {name} | {r['seconds']} | {r['produced']} | {faults} | "
                     f"{r['duplicates']} | {r['losses']} | {r['lost_acked']} | "
                     f"{r['out_of_order']} | {r['altered']} | {len(r['status_mismatches'])} | "
                     f"{len(r.get('status_ahead', []))} of {r.get('status_samples', '-')} | "
                     f"{r['load_before'][0]} / {r['load_after'][0]} | {r['when']} |")
    total = {k: sum(r[k] if isinstance(r[k], int) else len(r[k]) for r in runs.values())
             for k in ("produced", "duplicates", "losses", "lost_acked", "out_of_order", "altered",
                       "status_mismatches", "status_ahead")
             if all(k in r for r in runs.values())}
    n_faults = sum(sum(r["kills"].values()) for r in runs.values())
    lines += ["", f"In all: {n_faults} faults, " + ", ".join(f"{k} {v}" for k, v in total.items())]
    (RESULTS / "replication-crash-trial.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
