"""Instructions per one-record PRODUCE (and per answer pushed) on the supervisor's request path,
counted by valgrind's callgrind: a figure that does not move with the machine's load.

    python -m bench.request_instructions [--base TREE] [--requests 300,1300]
        [--cases shm:produce,shm:produce+answer,socket:produce+answer]

The in-process rig of bench.request_cost --inproc (bench/request_inproc.py) runs under
`valgrind --tool=callgrind` twice per case, with two request counts; the difference of the two
runs' total instructions divided by the difference of the counts is the cost of one request,
start-up, imports and warm-up cancelling out. It counts the rig's client side too (writing the
request into the ring or socket, reading the answers: the same code in both trees), so compare
trees by their difference, not by ratio to zero. With `--base TREE` the same for another
checkout (e.g. /work/wt-bench, main), each run a process importing that tree's edgebus.
PYTHONHASHSEED=0 makes hashing, and so the counts, the same from run to run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
# Runs the rig with the measured tree's edgebus imported first, this tree's bench for the rig.
_RUNNER = ("import sys; sys.path.insert(0, sys.argv[1]); import edgebus; "
           "sys.path.insert(0, sys.argv[2]); from bench.request_inproc import run; "
           "run(sys.argv[3], sys.argv[4], int(sys.argv[5]))")


def total_instructions(tree: Path, transport: str, case: str, requests: int) -> int:
    """Instructions callgrind counted for one run of the rig (all of the process)."""
    with tempfile.TemporaryDirectory(prefix="ebri-") as d:
        out = Path(d) / "callgrind.out"
        env = dict(os.environ, PYTHONHASHSEED="0")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        sys.executable, "-c", _RUNNER, str(tree), str(HERE), transport, case,
                        str(requests)], cwd=tree, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        text = out.read_text(errors="replace")
    m = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
    if m is None:
        raise RuntimeError("no instruction total in callgrind's output")
    return int(m.group(1))


def per_request(tree: Path, transport: str, case: str, low: int, high: int) -> float:
    a = total_instructions(tree, transport, case, low)
    b = total_instructions(tree, transport, case, high)
    return (b - a) / (high - low)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, default=None)
    ap.add_argument("--requests", default="300,1300", help="the two request counts")
    ap.add_argument("--cases", default="shm:produce,shm:produce+answer,socket:produce+answer")
    args = ap.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)")
        return 1
    low, high = (int(x) for x in args.requests.split(","))
    trees = [("this", HERE)] + ([("base", args.base.resolve())] if args.base else [])
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for spec in args.cases.split(","):
        transport, case = spec.split(":")
        for name, tree in trees:
            got = per_request(tree, transport, case, low, high)
            rows.setdefault((transport, case), {})[name] = got
            print(f"{name:4} {transport:6} {case:14}: {got:10.0f} instructions per request",
                  flush=True)
    if args.base is not None:
        print("\n| transport | case | base | this | this - base |\n|---|---|---|---|---|")
        for (transport, case), r in rows.items():
            print(f"| {transport} | {case} | {r['base']:.0f} | {r['this']:.0f} | "
                  f"{r['this'] - r['base']:+.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
