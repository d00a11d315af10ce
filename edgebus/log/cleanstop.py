"""The run marker: how the previous supervisor stopped.

`data_dir/running` (docs/FORMAT.md 4.10) holds the kernel's boot id; it is written (and fsynced)
at open and removed at a clean close, after the last fsync and checkpoint, once
`data_dir/clean-stop` (empty) is written and fsynced; the next open removes `clean-stop` again
after writing `running`. At the next open:

- `running` with this boot's id: the supervisor was killed or crashed, the machine stayed up,
  so the page cache kept everything it had written (only a batch cut mid-write can be torn);
- `running` with another boot's id: the machine went down under it (a power cut, a kernel
  crash). Records written but not yet fsynced may be gone, even at a batch boundary where
  recovery has nothing to cut; consumer-group commits past a log end are then that loss's only
  trace (edgebus/server/groups/offsets.py moves them back);
- no `running`, and `clean-stop`: the previous run stopped cleanly;
- neither, in a new (empty) directory: nothing to say;
- neither, in a directory that holds a log: UNKNOWN. An edgebus from before the marker wrote it
  (or the marker was deleted), and nothing says that it stopped cleanly: the start treats it as
  after a power cut, once (the marker is written now, so the next start knows).

Two files rather than one: the positive mark of a clean stop is what tells "stopped cleanly"
from "never marked"; an absent file cannot. Kafka's `.kafka_cleanshutdown` is that mark, without
the boot id.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgebus.log.fileutil import fsync_dir, read_file

RUN_MARKER_FILE = "running"
CLEAN_STOP_FILE = "clean-stop"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
CLEAN, KILLED, MACHINE_DOWN, UNKNOWN = "clean", "killed", "machine-down", "unknown"
# What a directory that no supervisor has run on may hold: the lock (taken before the marker is
# read) and the markers themselves. Anything else is a previous run's.
_NOT_A_RUN = frozenset({".lock", RUN_MARKER_FILE, CLEAN_STOP_FILE})
MAX_MARKER_BYTES = 4096  # a boot id is 37 bytes; anything larger is not ours (read bounded)


def boot_id() -> str:
    try:
        with open(BOOT_ID_PATH) as f:
            return f.read().strip()
    except OSError:
        return ""  # not Linux: every unclean stop counts as the machine going down


def previous_stop(data_dir: Path) -> str:
    """CLEAN, KILLED, MACHINE_DOWN or UNKNOWN, from the markers the previous run left."""
    try:
        seen = read_file(data_dir / RUN_MARKER_FILE, MAX_MARKER_BYTES).decode(errors="replace").strip()
    except FileNotFoundError:
        if (data_dir / CLEAN_STOP_FILE).exists():
            return CLEAN
        with os.scandir(data_dir) as it:
            ran = any(e.name not in _NOT_A_RUN for e in it)
        return UNKNOWN if ran else CLEAN
    return KILLED if seen and seen == boot_id() else MACHINE_DOWN


def mark_running(data_dir: Path) -> None:
    """At open, after previous_stop: `running` is written, then the clean stop's mark goes (a
    crash in between leaves both: `running` decides)."""
    path = data_dir / RUN_MARKER_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (boot_id() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(data_dir)
    if (data_dir / CLEAN_STOP_FILE).exists():
        os.unlink(data_dir / CLEAN_STOP_FILE)
        fsync_dir(data_dir)


def mark_stopped(data_dir: Path) -> None:
    """At a clean close: the clean stop's mark is durable before `running` goes, so a crash in
    between leaves `running` (an unclean stop), never neither (unknown) nor a false clean."""
    fd = os.open(data_dir / CLEAN_STOP_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(data_dir)
    os.unlink(data_dir / RUN_MARKER_FILE)
    fsync_dir(data_dir)
