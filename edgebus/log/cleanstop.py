"""The run marker: how the previous supervisor stopped.

`data_dir/running` (docs/FORMAT.md 4.10) holds the kernel's boot id; it is written (and fsynced)
at open and removed at a clean close, after the last fsync and checkpoint. At the next open:

- no marker: the previous run stopped cleanly (or the directory is new, or was written by an
  edgebus from before the marker);
- a marker with this boot's id: the supervisor was killed or crashed, the machine stayed up, so
  the page cache kept everything it had written (only a batch cut mid-write can be torn);
- a marker with another boot's id: the machine went down under it (a power cut, a kernel crash).
  Records written but not yet fsynced may be gone, even at a batch boundary where recovery has
  nothing to cut; consumer-group commits past a log end are then that loss's only trace
  (edgebus/server/groups/offsets.py moves them back).

Kafka's `.kafka_cleanshutdown` is the same idea without the boot id.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgebus.log.fileutil import fsync_dir, read_file

RUN_MARKER_FILE = "running"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
CLEAN, KILLED, MACHINE_DOWN = "clean", "killed", "machine-down"
MAX_MARKER_BYTES = 4096  # a boot id is 37 bytes; anything larger is not ours (read bounded)


def boot_id() -> str:
    try:
        with open(BOOT_ID_PATH) as f:
            return f.read().strip()
    except OSError:
        return ""  # not Linux: every unclean stop counts as the machine going down


def previous_stop(data_dir: Path) -> str:
    """CLEAN, KILLED or MACHINE_DOWN, from the marker the previous run left."""
    try:
        seen = read_file(data_dir / RUN_MARKER_FILE, MAX_MARKER_BYTES).decode(errors="replace").strip()
    except FileNotFoundError:
        return CLEAN
    return KILLED if seen and seen == boot_id() else MACHINE_DOWN


def mark_running(data_dir: Path) -> None:
    path = data_dir / RUN_MARKER_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (boot_id() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(data_dir)


def mark_stopped(data_dir: Path) -> None:
    os.unlink(data_dir / RUN_MARKER_FILE)
    fsync_dir(data_dir)
