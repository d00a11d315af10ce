"""The process's own CPU, memory, threads and descriptors, read from /proc/self; and the standard
Prometheus `process_*` metrics, for the supervisor and the bridges.

`self_usage()` is what the status document (server/status.py) and the edgebus_process_* metrics
report. It reads /proc/self/stat and lists /proc/self/fd, as psutil's Process.cpu_times,
memory_info, num_threads and num_fds do, with the same figures; psutil itself stays out of the
supervisor: importing it cost ~3 MB of RSS that stayed after the first `edgebus status` (issue 16).

prometheus-client's ProcessCollector gives them (process_cpu_seconds_total,
process_resident_memory_bytes, process_virtual_memory_bytes, process_start_time_seconds,
process_open_fds, process_max_fds), reading /proc/self. It also reads the boot time from
/proc/stat, and gives nothing at all when it cannot: the units' `ProcSubset=pid` hides /proc/stat.
The boot time is the real-time clock minus the time since boot (CLOCK_BOOTTIME), which is how the
kernel computes /proc/stat's `btime`, so the subclass below takes it from the clocks instead.
"""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

# /proc/self/stat's fields after the command name, which is in parentheses and may itself hold
# spaces and ")": split after its last ")". Indexes into that tail: proc(5) numbers the fields
# from 1 (pid), 2 (comm), 3 (state), so field N is tail[N - 3].
_UTIME, _STIME, _NUM_THREADS, _RSS_PAGES = 14 - 3, 15 - 3, 20 - 3, 24 - 3
_START_TICKS, _VSIZE = 22 - 3, 23 - 3
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class Usage(NamedTuple):
    """One look at this process: RSS bytes, user and system CPU seconds, threads, open fds;
    and virtual memory bytes and start time (seconds since the epoch) for process_*."""

    rss_bytes: int
    user_s: float
    system_s: float
    threads: int
    open_fds: int
    vsize_bytes: int = 0
    start_time_s: float = 0.0


def self_usage() -> Usage:
    """This process's figures from /proc/self (visible under the units' ProtectProc=invisible
    and ProcSubset=pid): one read of `stat` and a listing of `fd`."""
    with open("/proc/self/stat", "rb") as f:
        tail = f.read().rpartition(b")")[2].split()
    return Usage(rss_bytes=int(tail[_RSS_PAGES]) * _PAGE,
                 user_s=int(tail[_UTIME]) / _TICKS, system_s=int(tail[_STIME]) / _TICKS,
                 threads=int(tail[_NUM_THREADS]), open_fds=len(os.listdir("/proc/self/fd")),
                 vsize_bytes=int(tail[_VSIZE]), start_time_s=_start_time(int(tail[_START_TICKS])))


_started: float | None = None


def _start_time(start_ticks: int) -> float:
    """Seconds since the epoch at which this process started: computed once, as
    ProcessCollector reads the boot time once (the two clocks' difference moves in its last
    digits from call to call, and a start time must not)."""
    global _started
    if _started is None:
        _started = start_ticks / _TICKS + boot_time()
    return _started


def max_fds() -> int:
    """The soft limit on open files (what /proc/self/limits calls Max open files)."""
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def boot_time() -> float:
    """Seconds since the epoch at which the system booted (what /proc/stat calls btime)."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def process_collector(registry: Any) -> Any:
    """A ProcessCollector registered in `registry` that works without /proc/stat."""
    from prometheus_client import ProcessCollector

    class _Collector(ProcessCollector):
        def _boot_time(self) -> float:
            return boot_time()

    return _Collector(registry=registry)
