"""Shared-memory rings: the fast local transport (docs/ARCHITECTURE.md, docs/FORMAT.md section 6).

`edgebus.shm.ring` wraps the C module `edgebus.shm._ring` (cffi, API mode, built at install by
setup.py). `available()` says whether this interpreter can use rings at all; the clients fall back
to the socket when it cannot.
"""

from __future__ import annotations

import os
import sys

from edgebus.tuning import CPU_CHECK, CPU_CHECK_NS


def unavailable_reason() -> str | None:
    """None when rings can be used here, else why not (for the fallback's debug line)."""
    if not sys.platform.startswith("linux"):
        return f"shared-memory rings need Linux (memfd, eventfd), not {sys.platform}"
    if not hasattr(os, "memfd_create") or not hasattr(os, "eventfd"):
        return "this Python has no os.memfd_create / os.eventfd"
    try:
        from edgebus.shm import _ring  # noqa: F401
    except ImportError as e:
        return f"the C module edgebus.shm._ring is not built ({e}); reinstall edgebus with a C compiler"
    return None


def available() -> bool:
    return unavailable_reason() is None


# --- "is a CPU free?" for spinning --------------------------------------------------------------
# Spinning only pays when the spinner has a core to itself. On a small board (2 or 4 cores) with
# more runnable tasks than cores, a spinning supervisor or consumer takes the CPU the producer it
# is waiting for needs. /proc/loadavg's 4th field counts runnable tasks right now; it is read at
# most every CPU_CHECK_NS per process (edgebus/tuning.py; EDGEBUS_SHM_CPU_CHECK=0 turns it off).
_NCPU = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_cpu_state = [0, True]  # [checked at (monotonic ns), free]
_NO_CHECK = not CPU_CHECK


def cpu_free(now_ns: int) -> bool:
    """True unless more tasks are runnable than this process may use CPUs (cached ~10 ms)."""
    if _NO_CHECK:
        return True
    if now_ns - _cpu_state[0] < CPU_CHECK_NS:
        return bool(_cpu_state[1])
    _cpu_state[0] = now_ns
    try:
        with open("/proc/loadavg", "rb") as f:
            running = int(f.read().split()[3].split(b"/")[0])
        _cpu_state[1] = running <= _NCPU
    except (OSError, ValueError, IndexError):
        _cpu_state[1] = True
    return bool(_cpu_state[1])
