"""The benchmarks' knobs that act on processes rather than on the library (issue 16, tail latency):
the supervisor's scheduling priority, set from outside the way systemd's `Nice=` sets it, and the
variant specs of `bench.paced --variants` / `bench.hops --variants`.

Linux keeps a nice value per thread (setpriority(PRIO_PROCESS, pid) changes that one thread), and
a thread inherits its creator's; systemd sets `Nice=` before exec, so every thread of the service
has it. `renice` therefore sets it on each thread of the process (/proc/PID/task), already started
ones included (the fsync helper).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def renice(pid: int, nice: int) -> list[int]:
    """Set the nice value of every thread of `pid`; returns the values read back (one a thread).
    Lowering it below 0 needs CAP_SYS_NICE (root): PermissionError otherwise."""
    got = []
    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        tid = int(task.name)
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
            got.append(os.getpriority(os.PRIO_PROCESS, tid))
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
    return got


POLICIES = {"other": os.SCHED_OTHER, "batch": os.SCHED_BATCH, "fifo": os.SCHED_FIFO,
            "rr": os.SCHED_RR}


def set_policy(pid: int, policy: str) -> list[int]:
    """systemd's CPUSchedulingPolicy= from outside: the policy (fifo and rr at priority 1, the
    lowest realtime one) on every thread of `pid`; returns the policies read back."""
    pol = POLICIES[policy]
    prio = 1 if pol in (os.SCHED_FIFO, os.SCHED_RR) else 0
    got = []
    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        tid = int(task.name)
        try:
            os.sched_setscheduler(tid, pol, os.sched_param(prio))
            got.append(os.sched_getscheduler(tid))
        except ProcessLookupError:
            continue
    return got


@dataclass
class Variant:
    """One side of an A/B: `name:KEY=VALUE+KEY=VALUE`. Keys: `freeze=0` (the benchmark's children
    do not freeze their inherited heap: bench/run.py CHILD_GC_FREEZE), `nice=N` (the supervisor's
    threads at nice N during the edgebus cases), `policy=fifo|rr|batch|other` (their scheduling
    policy, as CPUSchedulingPolicy=), anything else an environment variable of the
    supervisor (a separate supervisor per distinct environment), e.g. EDGEBUS_GC_FREEZE=0."""

    name: str
    freeze: bool = True
    nice: int | None = None
    policy: str = "other"
    env: dict[str, str] = field(default_factory=dict)

    def env_key(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(self.env.items()))


def parse_variants(spec: str) -> list[Variant]:
    """'before:freeze=0;after:' -> two variants; an empty spec is one variant, `default`."""
    out = []
    for part in (spec or "default:").split(";"):
        if not part.strip():
            continue
        name, _, rest = part.partition(":")
        v = Variant(name.strip() or "default")
        for kv in (x for x in rest.split("+") if x):
            k, sep, val = kv.partition("=")
            if not sep:
                raise ValueError(f"variant {v.name!r}: {kv!r} is not KEY=VALUE")
            if k == "freeze":
                v.freeze = val != "0"
            elif k == "nice":
                v.nice = int(val)
            elif k == "policy":
                if val not in POLICIES:
                    raise ValueError(f"variant {v.name!r}: policy must be one of {', '.join(POLICIES)}")
                v.policy = val
            else:
                v.env[k] = val
        out.append(v)
    return out
