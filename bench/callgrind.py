"""valgrind's callgrind from a benchmark: is it here, zero and dump a running process's
counters (`callgrind_control`), and read the instruction counts of its dumps. For the
benchmarks that count instructions instead of time (bench/acl_instructions.py,
kafka_instructions.py, consumer_calls.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path


def valgrind_missing() -> str | None:
    """Why this cannot run here, or None."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install valgrind)"
    return None


def callgrind_control(pid: int, *args: str) -> None:
    """Zero or dump the counters of a process running under callgrind (through vgdb)."""
    r = subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0 or "OK" not in r.stdout:
        raise RuntimeError(f"callgrind_control {' '.join(args)} {pid}: {r.stdout}{r.stderr}")


def dumps(prefix: Path) -> dict[str, int]:
    """label -> instructions of each `callgrind_control --dump=label` of one process's output."""
    out = {}
    for f in prefix.parent.glob(prefix.name + ".*"):
        text = f.read_text(errors="replace")
        label = re.search(r"^desc: Trigger: dump (\S+)", text, re.M)
        total = re.search(r"^summary: (\d+)", text, re.M) or re.search(r"^totals: (\d+)", text, re.M)
        if label and total:
            out[label.group(1)] = int(total.group(1))
    return out


def self_counts(path: Path) -> dict[str, int]:
    """C function -> its own (exclusive) instructions in one callgrind dump (the file format:
    valgrind's docs/cl-format; a cost line right after `calls=` is the call's inclusive cost)."""
    names: dict[str, str] = {}
    out: dict[str, int] = {}
    fn = ""
    after_call = False
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("fn=", "cfn=")):
            m = re.match(r"c?fn=(\(\d+\))?\s*(.*)", line)
            assert m is not None
            ref, name = m.group(1), m.group(2)
            if ref and name:
                names[ref] = name
            if line[0] == "f":
                fn = name or names.get(ref or "", ref or "")
        elif line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if after_call:
                after_call = False
                continue
            parts = line.split()
            if len(parts) >= 2:
                out[fn] = out.get(fn, 0) + int(parts[1])
    return out
