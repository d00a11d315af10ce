"""The clean-stop marker: whether the previous supervisor stopped cleanly.

`data_dir/clean-shutdown` (docs/FORMAT.md 4.10) is an empty file made by a clean close, after the
last fsync and checkpoint, and removed at the next open before anything is appended. Found at
open: the last run stopped cleanly. Missing from a data directory that has topics: it was killed,
crashed or lost power (or it was written by an edgebus from before the marker), which is worth
saying, because a power cut can drop written-but-unsynced records at a batch boundary where
recovery has nothing to cut and nothing else would tell (Kafka's `.kafka_cleanshutdown` is the
same idea).
"""

from __future__ import annotations

import os
from pathlib import Path

from edgebus.log.fileutil import fsync_dir

CLEAN_STOP_FILE = "clean-shutdown"


def take_clean_stop_marker(data_dir: Path) -> bool:
    """Whether the marker was there; it is gone (and the directory fsynced) on return, so that
    a crash of this run is not taken for a clean stop."""
    path = data_dir / CLEAN_STOP_FILE
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(data_dir)
    return True


def leave_clean_stop_marker(data_dir: Path) -> None:
    fd = os.open(data_dir / CLEAN_STOP_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    fsync_dir(data_dir)
