"""Function calls the supervisor makes per one-record PRODUCE (and per answer it pushes): a
load-insensitive measure of the Python on its request path.

    python -m bench.request_calls [--requests 500] [--transports shm,socket]
        [--cases produce,produce+answer] [--top 25] [--base TREE]

The in-process rig of bench.request_cost --inproc (bench/request_inproc.py: a Broker with real
connections, the supervisor's own entry points called for each request) with `sys.setprofile`
switched on only around the supervisor's calls, so the client's side is not counted. Counts
Python function calls and calls of C functions (builtins, methods of C types) separately, per
request, and lists the functions called most. The same inputs give the same counts on any
machine and under any load, unlike CPU time; cache-cold, each Python call costs about a
microsecond (bench/README.md, "Where the time goes").

`--base TREE`: the same counts for another checkout (e.g. /work/wt-bench, main), each count in a
process of its own importing that tree's edgebus, so before/after are printed side by side.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def count(transport: str, case: str, requests: int, top: int) -> dict[str, Any]:
    """Calls per request, in this process (whose sys.path decides which edgebus is measured)."""
    from bench.request_inproc import Rig, _steady_heap, produce_frame

    _steady_heap()
    rig = Rig(transport, case == "produce+answer")
    calls: collections.Counter[str] = collections.Counter()
    kinds = collections.Counter[str]()

    def prof(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            kinds["py"] += 1
            co = frame.f_code
            calls[f"{Path(co.co_filename).name}:{co.co_name}"] += 1
        elif event == "c_call":
            kinds["c"] += 1
            calls[f"<c> {getattr(arg, '__qualname__', arg)}"] += 1

    serve = rig._serve

    def counted(conn: Any) -> None:
        sys.setprofile(prof)
        try:
            serve(conn)
        finally:
            sys.setprofile(None)

    try:
        frame = produce_frame(5)
        for _ in range(200):  # warm: the first index entries, caches filled once
            rig.iteration(frame)
        rig._serve = counted  # type: ignore[method-assign]
        for _ in range(requests):
            rig.iteration(frame)
    finally:
        rig._serve = serve  # type: ignore[method-assign]
        rig.close()
    # setprofile's own c_call of itself closes each count: not the supervisor's.
    calls.pop("<c> setprofile", None)
    kinds["c"] -= calls.get("<c> setprofile", 0)
    return {"py": kinds["py"] / requests, "c": kinds["c"] / requests,
            "top": [(k, v / requests) for k, v in calls.most_common(top)]}


def count_in(tree: Path, transport: str, case: str, requests: int, top: int,
             env: dict[str, str] | None = None) -> dict[str, Any]:
    """`count` in a process of its own importing the edgebus of `tree` (bench from this one),
    with `env` added to its environment (e.g. EDGEBUS_SHM_C_PLANE=0: Python's path)."""
    # this tree's bench first (the rig), then the measured tree's edgebus: bench imports edgebus
    # lazily, so put the measured tree ahead for it by importing edgebus from there first.
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import edgebus; "
            "sys.path.insert(0, sys.argv[2]); from bench.request_calls import count; "
            "print(json.dumps(count(sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))))")
    out = subprocess.run([sys.executable, "-c", code, str(tree), str(HERE), transport, case,
                          str(requests), str(top)], cwd=tree, capture_output=True, text=True,
                         check=True, env={**os.environ, **(env or {})}).stdout
    return dict(json.loads(out.splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--transports", default="shm,socket")
    ap.add_argument("--cases", default="produce,produce+answer")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--base", type=Path, default=None)
    args = ap.parse_args(argv)
    trees = [("this", HERE)] + ([("base", args.base.resolve())] if args.base else [])
    rows = []
    for transport in args.transports.split(","):
        for case in args.cases.split(","):
            for name, tree in trees:
                got = count_in(tree, transport, case, args.requests, args.top)
                rows.append((name, transport, case, got))
                print(f"{name:4} {transport:6} {case:14}: {got['py']:6.1f} Python calls, "
                      f"{got['c']:6.1f} C calls per request", flush=True)
    for name, transport, case, got in rows:
        if name != "this":
            continue
        print(f"\nthis tree, {transport} {case}: calls per request, most first")
        for k, v in got["top"]:
            print(f"  {v:6.2f}  {k}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
