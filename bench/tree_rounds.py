"""The main of the benchmarks that time what a fresh supervisor's first requests cost, against
another checkout's supervisor in the same run (bench/first_use.py, bench/kafka_first_request.py).

Each round starts one supervisor per tree (rounds alternate which goes first) and takes the
benchmark's figures, in milliseconds; the medians are printed as a table and written, with every
round, the machine and its load average, to bench/results/NAME.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# one(tree, settle_s): one round's figures (ms) from a supervisor of `tree` (PYTHONPATH for its
# process; None: this checkout), started and left to settle for settle_s first.
Round = Callable[[str | None, float], dict[str, float]]


def main(argv: list[str] | None, prog: str, doc: str, result_file: str, one: Round) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    ap.add_argument("--tree", help="another checkout to measure in the same run (e.g. /work/main)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()  # before the chdir below: a relative --out is the caller's
    # `python -m` puts the working directory first on the child's sys.path: run the supervisors
    # from elsewhere, so that PYTHONPATH=TREE, not this checkout, gives the other one's edgebus.
    os.chdir(tempfile.gettempdir())
    trees: list[tuple[str, str | None]] = [("this checkout", None)]
    if args.tree:
        trees.append((args.tree, str(Path(args.tree).resolve())))
    rows: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    for r in range(args.rounds):
        for name, tree in trees if r % 2 == 0 else trees[::-1]:  # alternate who goes first
            rows[name].append(one(tree, args.settle))
    keys = list(next(iter(rows.values()))[0])
    med = {name: {k: round(statistics.median(x[k] for x in runs), 2) for k in keys}
           for name, runs in rows.items()}
    report = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rounds": args.rounds,
              "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python "
                         f"{platform.python_version()}", "loadavg": round(os.getloadavg()[0], 2),
              "median_ms": med, "runs": rows}
    print(f"median of {args.rounds} rounds, ms (load average {report['loadavg']}):")
    print("| supervisor | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, m in med.items():
        print(f"| {name} | " + " | ".join(str(m[k]) for k in keys) + " |")
    out.mkdir(parents=True, exist_ok=True)
    (out / result_file).write_text(json.dumps(report, indent=1) + "\n")
    return 0
