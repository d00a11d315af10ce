"""Run a Python module with every function call of its main thread counted (sys.setprofile):
the supervisor's calls per message and per wake-up (issue 16; bench/wakeups.py --calls).

    python bench/callcount.py OUT.json PYTHON -m MODULE ARGS...

An EmbeddedBroker `wrapper` (edgebus/testing.py): the command after OUT.json is the one the
supervisor would have run; it runs in this process (so the broker's pid is the supervisor's).
Counting starts when the file OUT.json.start exists and stops at OUT.json.stop (bench/wakeups.py
creates them around the paced run; looked at before each epoll wait), so start-up and shutdown
are not counted. At exit OUT.json
gets {"calls": {"module:function": n, ...}} with Python functions and C functions alike. The
counts, not the times, are the figure: the profiler slows every call the same way.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import threading
from collections import Counter
from types import FrameType
from typing import Any


def _name(frame: FrameType, event: str, arg: Any) -> str:
    if event == "call":
        co = frame.f_code
        return f"{os.path.basename(co.co_filename)}:{co.co_qualname}"
    mod = getattr(arg, "__module__", None) or type(getattr(arg, "__self__", None)).__name__
    return f"{mod}:{getattr(arg, '__qualname__', repr(arg))}"


def main() -> None:
    out = sys.argv[1]
    args = sys.argv[2:]
    if len(args) < 3 or args[1] != "-m":
        raise SystemExit("usage: python -m bench.callcount OUT.json PYTHON -m MODULE ARGS...")
    module = args[2]
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # run as a script: bench/ must not shadow a standard module (tests/test_bench_names.py)
    sys.argv = [module, *args[3:]]
    counts: Counter[str] = Counter()
    state = {"on": False}
    start, stop = out + ".start", out + ".stop"
    main_thread = threading.main_thread()

    def prof(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call" and event != "c_call":
            return
        # a turn's wait: epoll's, or the parked loop's in C (edgebus/server/listeners/shm_park.py)
        if event == "c_call" and getattr(arg, "__name__", "") in ("poll", "eb_park_wait"):
            state["on"] = os.path.exists(start) and not os.path.exists(stop)
        if state["on"]:
            counts[_name(frame, event, arg)] += 1

    assert threading.current_thread() is main_thread
    sys.setprofile(prof)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        sys.setprofile(None)
        with open(out, "w") as f:
            json.dump({"calls": dict(counts)}, f)


if __name__ == "__main__":
    main()
