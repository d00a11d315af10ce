"""Disk protection: free-space watermarks on the data directory's filesystem.

Below the low watermark each topic's `on_disk_full` policy applies: `reject` refuses appends with
DiskFullError (reads, and the supervisor's own internal topics, go on), `drop-oldest` deletes the
oldest segments of such topics (oldest first across all of them, never an active segment) until
the high watermark is free again. Normal service resumes at the high watermark; the gap between
the two keeps the state from flapping.

Free space is read with os.statvfs (one call, a few microseconds; psutil.disk_usage's figures
without importing psutil): on a timer every `disk.check_interval_ms`, and on the append path
once the bytes appended since the last check reach half of what was free above the low
watermark. So a burst of appends between two timer checks cannot run the filesystem full
unseen, and what another process wrote meanwhile is seen
before our appends have used up the margin it shrank (with the whole margin as the budget, a
fast producer could append it all on top of the other writer's bytes before the next timer
check). Halving costs about log2(margin / batch size) extra checks on the way down to the
watermark and none far from it. Used from the supervisor's loop thread only.

Invariant: `low` is True from a check that saw free < low watermark until a check that sees
free >= high watermark; while it is True no append to a `reject` topic is accepted.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgebus.errors import DiskFullError
from edgebus.log.topic_config import DISK_FULL_DROP_OLDEST
from edgebus.opsconfig import Threshold
from edgebus.server.service import Service

log = logging.getLogger("edgebus.disk")

# (total, free) bytes of the filesystem holding a path.
Probe = Callable[[Path], tuple[int, int]]

DEFAULT_LOW = Threshold(percent=5.0)
DEFAULT_HIGH = Threshold(percent=10.0)
DEFAULT_INTERVAL_S = 5.0
ENOSPC_LOG_INTERVAL_S = 60.0  # the ENOSPC warning's rate with watermarks below what is free


def statvfs_probe(path: Path) -> tuple[int, int]:
    """Total and free bytes for unprivileged writers (f_bavail excludes root's reserve), as
    psutil.disk_usage computes them."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def filesystem_read_only(path: Path) -> bool:
    """Whether the filesystem holding `path` is mounted read-only. statvfs alone misses an ext4
    that remounted itself after an error on recent kernels (its superblock says
    "emergency_ro" while the mount stays "rw"), so /proc/self/mountinfo is read as well: the
    line whose device is `path`'s, mount options (field 6) and superblock options (the last)."""
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        return True
    dev = os.stat(path).st_dev
    want = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) > 6 and fields[2] == want:
            opts = set(fields[5].split(",")) | set(fields[-1].split(","))
            if opts & {"ro", "emergency_ro"}:
                return True
    return False


def human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class DiskGuard(Service):
    timer_static = True  # check() outside tick() only moves its time later
    def __init__(self, logs: Any, low: Threshold = DEFAULT_LOW, high: Threshold = DEFAULT_HIGH,
                 interval_s: float = DEFAULT_INTERVAL_S, *, probe: Probe | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logs = logs
        self.path = Path(logs.data_dir)
        self.low_threshold, self.high_threshold = low, high
        self.interval = interval_s
        self._probe = probe or statvfs_probe
        self._clock = clock
        self.low = False
        self.total = self.free = 0
        self.low_bytes = self.high_bytes = 0
        # Bytes that may still be appended before a check is due ((free - low) / 2 at the last check).
        self._budget = 0
        self._next_check = 0.0
        self.checks = 0
        self.rejected_appends = 0
        self.dropped_segments = 0
        self.dropped_bytes = 0
        self.last_error: str | None = None
        # The filesystem is mounted read-only (an SD card is remounted so after I/O errors, with
        # errors=remount-ro): every append and fsync fails until it is repaired and remounted.
        self.read_only = False
        self.enospc_failures = 0  # ENOSPC met while the watermarks did not hold appends back
        # Free bytes seen at the last ENOSPC: the disk is FULL until more is free (with the
        # watermarks at 0 `low` never holds, yet status must not say "ok").
        self._enospc_free: int | None = None
        self._enospc_logged_count = 0
        self._enospc_logged_at = -ENOSPC_LOG_INTERVAL_S

    @classmethod
    def from_settings(cls, logs: Any, settings: Any, probe: Probe | None = None) -> DiskGuard:
        """From the config's `disk:` section (edgebus.config.DiskSettings)."""
        return cls(logs, settings.low_watermark, settings.high_watermark,
                   settings.check_interval_ms / 1000, probe=probe)

    def apply_settings(self, settings: Any) -> None:
        """A reload's `disk:` section: the watermarks checked against the free space at once,
        the next check one new interval from now."""
        self.low_threshold, self.high_threshold = settings.low_watermark, settings.high_watermark
        self.interval = settings.check_interval_ms / 1000
        self.check()

    # --- the service: a timer on the loop --------------------------------------------------------
    def next_deadline(self) -> float:
        return self._next_check

    def tick(self, now: float) -> None:
        if now >= self._next_check:
            self.check(now)

    # --- the check -------------------------------------------------------------------------------
    def check(self, now: float | None = None, enospc: bool = False) -> None:
        """Read free space, move between the ok and low states, and reclaim space for
        drop-oldest topics while low. `enospc`: a write just failed with ENOSPC, which proves
        the disk full whatever statvfs says (reserved blocks, quotas, a filesystem that cannot
        count its free space exactly)."""
        now = self._clock() if now is None else now
        self._next_check = now + self.interval
        if not self._read():
            return
        if enospc:
            self._enospc_free = self.free
        entered = False
        if not self.low and (self.free < self.low_bytes or enospc):
            self.low = entered = True
            if self.free < self.low_bytes:
                log.warning(
                    "disk space low on %s: %s free of %s, below the low watermark %s (%s); "
                    "appends to topics with on_disk_full=reject are refused and drop-oldest "
                    "topics lose their oldest segments until %s (%s) is free",
                    self.path, human(self.free), human(self.total), human(self.low_bytes),
                    self.low_threshold, human(self.high_bytes), self.high_threshold)
            elif self.free < self.high_bytes:
                log.warning(
                    "no space left on device on %s (a write met ENOSPC with %s of %s free by "
                    "statvfs); appends to topics with on_disk_full=reject are refused and "
                    "drop-oldest topics lose their oldest segments until %s (%s) is free",
                    self.path, human(self.free), human(self.total), human(self.high_bytes),
                    self.high_threshold)
        if self.low:
            self._reclaim()
        if self.low and self.free >= self.high_bytes:
            self.low = False
            if entered:  # ENOSPC with the watermarks below what statvfs shows (0 turns them off)
                self._log_enospc(now)
            else:
                log.info("disk space recovered on %s: %s free, at or above the high watermark "
                         "%s; appends resume", self.path, human(self.free),
                         human(self.high_bytes))
        self._budget = (self.free - self.low_bytes) // 2

    def _log_enospc(self, now: float) -> None:
        """One line a minute at most: every refused append of a busy producer meets ENOSPC."""
        self.enospc_failures += 1
        if now < self._enospc_logged_at + ENOSPC_LOG_INTERVAL_S:
            return
        since = self.enospc_failures - self._enospc_logged_count
        self._enospc_logged_at, self._enospc_logged_count = now, self.enospc_failures
        log.warning("no space left on device on %s: %d append(s) met ENOSPC since the last such "
                    "line, with %s of %s free by statvfs; the watermarks (%s, %s) do not hold "
                    "appends back, so each append is tried", self.path, since, human(self.free),
                    human(self.total), self.low_threshold, self.high_threshold)

    def _read(self) -> bool:
        try:
            self.total, self.free = self._probe(self.path)
        except OSError as e:
            # Keep the previous state: a failed statvfs says nothing about space.
            if self.last_error != str(e):
                log.error("cannot read free space of %s: %s", self.path, e)
            self.last_error = str(e)
            return False
        self.last_error = None
        self.checks += 1
        if self._enospc_free is not None and self.free > self._enospc_free:
            self._enospc_free = None  # space was freed: the next append may fit
        self._check_read_only()
        self.low_bytes = self.low_threshold.resolve(self.total)
        self.high_bytes = max(self.high_threshold.resolve(self.total), self.low_bytes)
        return True

    def _check_read_only(self) -> None:
        try:
            ro = filesystem_read_only(self.path)
        except OSError:
            return  # _read() reports a failing statvfs
        if ro and not self.read_only:
            log.error("the filesystem of %s is read-only: appends and fsyncs fail (an SD card "
                      "is remounted read-only after I/O errors); check `dmesg`, repair it "
                      "(fsck) and remount it read-write, then restart edgebus", self.path)
        elif self.read_only and not ro:
            log.warning("the filesystem of %s is writable again; partitions that failed while it "
                        "was read-only stay offline until edgebus restarts", self.path)
        self.read_only = ro

    # --- the append path (handlers.produce) ------------------------------------------------------
    def admit(self, p: Any, nbytes: int) -> None:
        """Before appending `nbytes` to partition `p`: raise DiskFullError if its topic's policy
        refuses it now. Costs a subtraction unless a check is due."""
        self._budget -= nbytes
        if self._budget < 0 and (not self.low or self._clock() >= self._next_check):
            self.check()
        if self.low and p.config.on_disk_full != DISK_FULL_DROP_OLDEST:
            self.rejected_appends += 1
            raise DiskFullError(
                f"disk space low on {self.path}: {human(self.free)} free, below the low watermark "
                f"of {human(self.low_bytes)}; topic {p.topic!r} (on_disk_full=reject) refuses "
                f"appends until {human(self.high_bytes)} is free (reads go on)")

    def append(self, p: Any, batch: bytearray, info: Any, now_ms: int) -> tuple[int, int]:
        """`p.append` behind the watermark policy. An append that meets ENOSPC anyway (another
        process filled the disk between checks) is tried once more on a drop-oldest topic after
        reclaiming space; DiskFullError comes from errno, never from message text."""
        budget = self._budget - info.length
        if budget >= 0 and not self.low:
            self._budget = budget  # admit()'s common case, without the call: one subtraction
        else:
            self.admit(p, info.length)
        try:
            return p.append(batch, info, now_ms)
        except DiskFullError:
            self.check(enospc=True)  # reclaims space for drop-oldest topics
            if p.config.on_disk_full != DISK_FULL_DROP_OLDEST:
                self.rejected_appends += 1
                raise
        try:
            return p.append(batch, info, now_ms)
        except DiskFullError:
            self.rejected_appends += 1
            raise

    # --- drop-oldest -----------------------------------------------------------------------------
    def _reclaim(self) -> None:
        """Delete oldest segments of drop-oldest topics, oldest first, until the high watermark
        is free or nothing more may go."""
        ages: dict[int, tuple[float, Any]] = {}
        for p in self._droppable():
            age = _oldest_age(p)
            if age is not None:
                ages[id(p)] = (age, p)
        dropped: dict[str, int] = {}
        while self.free < self.high_bytes and ages:
            # Oldest first; among equal times (coarse filesystem clocks) the largest partition.
            key = min(ages, key=lambda k: (ages[k][0], -ages[k][1].size_bytes))
            p = ages[key][1]
            oldest = p.oldest_segment()
            size, name = (oldest.size, oldest.name) if oldest is not None else (0, "?")
            start = p.log_start_offset
            try:
                deleted = p.delete_oldest_segment()
            except Exception as e:  # storage errors are typed; a bug must not stop the loop
                log.error("drop-oldest: cannot delete the oldest segment of %s: %s", p.name, e)
                deleted = False
            if deleted:
                self.dropped_segments += 1
                self.dropped_bytes += size
                dropped[p.name] = dropped.get(p.name, 0) + 1
                log.warning("drop-oldest: deleted segment %s of %s (%s, offsets %d..%d) to free "
                            "disk space", name, p.name, human(size), start,
                            p.log_start_offset - 1)
            age = _oldest_age(p) if deleted and _droppable_partition(p) else None
            if age is None:
                del ages[key]
            else:
                ages[key] = (age, p)
            if deleted and not self._read():
                break
        if dropped:
            log.warning("drop-oldest: deleted %d segment(s) from %s; %s free now",
                        sum(dropped.values()), ", ".join(sorted(dropped)), human(self.free))

    def _droppable(self) -> list[Any]:
        return [p for p in self.logs.all_partitions() if _droppable_partition(p)]

    # --- views -----------------------------------------------------------------------------------
    @property
    def full(self) -> bool:
        """No space at all: 0 bytes free, or an append met ENOSPC and nothing was freed since."""
        return self.total > 0 and (self.free == 0 or self._enospc_free is not None)

    def snapshot(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "state": "low" if self.low else "full" if self.full else "ok",
            "read_only": self.read_only,
            "total": self.total,
            "free": self.free,
            "used": max(0, self.total - self.free),
            "low_watermark": self.low_bytes,
            "high_watermark": self.high_bytes,
            "low_watermark_setting": str(self.low_threshold),
            "high_watermark_setting": str(self.high_threshold),
            "check_interval_s": self.interval,
            "rejected_appends": self.rejected_appends,
            "dropped_segments": self.dropped_segments,
            "dropped_bytes": self.dropped_bytes,
            "error": self.last_error,
        }


def _droppable_partition(p: Any) -> bool:
    return (p.config.on_disk_full == DISK_FULL_DROP_OLDEST and not p.topic.startswith("__")
            and not p.offline and p.segment_count > 1)


def _oldest_age(p: Any) -> float | None:
    """When the oldest segment was last written (its newest record's age, from the file)."""
    oldest = p.oldest_segment()
    return oldest.mtime if oldest is not None else None
