"""The standard Prometheus `process_*` metrics, for the supervisor and the bridges.

prometheus-client's ProcessCollector gives them (process_cpu_seconds_total,
process_resident_memory_bytes, process_virtual_memory_bytes, process_start_time_seconds,
process_open_fds, process_max_fds), reading /proc/self. It also reads the boot time from
/proc/stat, and gives nothing at all when it cannot: the units' `ProcSubset=pid` hides /proc/stat.
The boot time is the real-time clock minus the time since boot (CLOCK_BOOTTIME), which is how the
kernel computes /proc/stat's `btime`, so the subclass below takes it from the clocks instead.
"""

from __future__ import annotations

import time
from typing import Any


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
