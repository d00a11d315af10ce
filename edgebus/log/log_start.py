"""A partition's log start offset when it lies inside a segment: `log-start-offset` in the
partition directory (docs/FORMAT.md section 4.7).

Retention moves the log start by deleting whole segments, so the first segment's base offset is
the start and nothing needs storing. Kafka's DeleteRecords moves it to any offset; the offsets
below it are then gone for readers even though their segment stays until everything in it is
below the start. The file holds that floor, written atomically (temp file, fsync, rename, fsync
of the directory) before the move is acknowledged, so a restart never shows deleted records
again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edgebus.log.fileutil import atomic_write, read_file

LOG_START_FILE = "log-start-offset"
# The file is one decimal number and a newline; anything longer is not ours.
MAX_LOG_START_FILE = 32


def read_log_start(directory: Path, log: logging.Logger) -> int | None:
    """The stored floor, or None when there is none (or it is damaged: then only whole
    segments bound the start, and records deleted by DeleteRecords inside the first segment
    show again; nothing is lost)."""
    path = directory / LOG_START_FILE
    try:
        text = read_file(path, MAX_LOG_START_FILE).decode("ascii", "replace").strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("cannot read %s: %s; ignoring it", path, e)
        return None
    except Exception as e:  # StorageError for an oversized file
        log.warning("%s: %s; ignoring it", path, e)
        return None
    if not text.isdigit() or len(text) > 19:
        log.warning("%s holds %r, not an offset; ignoring it", path, text[:40])
        return None
    return int(text)


def write_log_start(directory: Path, offset: int) -> None:
    """Store the floor durably (raises OSError)."""
    atomic_write(directory / LOG_START_FILE, f"{offset}\n".encode("ascii"))
