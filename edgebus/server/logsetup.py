"""Logging for the supervisor: one line per event, levels from the config, journald-friendly.

- Under systemd with standard error connected to the journal (JOURNAL_STREAM names the same
  device and inode as fd 2, see systemd.exec(5)), each line starts with the sd-daemon(3) priority
  prefix (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug), so `journalctl -p warning` filters
  by level, and no timestamp is written (the journal keeps its own). Every line of a multi-line
  record (a traceback) carries the prefix, so none lands in the journal at the wrong level.
- Otherwise (a terminal, a file, a pipe) lines start with a timestamp. No colour is ever written,
  so logs piped to a file or another program stay plain text.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

# sd-daemon(3) / syslog(3) priorities.
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
             logging.DEBUG: 7}
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"


def stream_is_journal(stream: TextIO) -> bool:
    """True when `stream` is the journal stream systemd connected (JOURNAL_STREAM=dev:inode)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError, AttributeError):
        return False


class JournalFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in text.splitlines() or [""])


def setup_logging(level: str, stream: TextIO | None = None) -> bool:
    """Configure the root logger; True when writing to the journal."""
    stream = stream or sys.stderr
    journal = stream_is_journal(stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if journal else logging.Formatter(PLAIN_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler],
                        force=True)
    return journal
