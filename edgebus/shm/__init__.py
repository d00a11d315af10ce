"""Shared-memory rings: the fast local transport (docs/ARCHITECTURE.md, docs/FORMAT.md section 6).

`edgebus.shm.ring` wraps the C module `edgebus.shm._ring` (cffi, API mode, built at install by
setup.py). `available()` says whether this interpreter can use rings at all; the clients fall back
to the socket when it cannot.
"""

from __future__ import annotations

import os
import sys


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
