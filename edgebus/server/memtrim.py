"""Give the heap memory freed by a closed connection back to the operating system.

A fetch answer of several MiB comes from the C heap; once glibc has seen such blocks freed it
raises its mmap threshold and serves the next ones from the heap, whose free pages it returns to
the kernel only at the very top. So after clients that left tens of MiB of unread answers
disconnect, the memory is free inside the process but stays in its RSS, on a board where that
RSS is what the OOM killer and `MemoryHigh=` see (issue 14 measured ~300 MB kept while idle).
`malloc_trim(0)` releases the free pages of every arena (madvise). It is called only when a
connection that held at least TRIM_AFTER_BYTES closes, so its cost (a walk of the heap's free
lists, about a millisecond) is paid rarely. On a C library without it (musl) this does nothing.
"""

from __future__ import annotations

import logging

from edgebus.heap import libc_function

log = logging.getLogger("edgebus.memory")

# Below this, memory freed by one connection is left for the heap to reuse; above it, a trim
# is worth its cost. One MiB is far above a connection's usual buffers (a few KiB of answers).
TRIM_AFTER_BYTES = 1024 * 1024

_trim = libc_function("int(*)(size_t)", "malloc_trim")  # not ctypes: heap.libc_function


def release_free_memory() -> None:
    """Return the heap's free pages to the kernel (glibc); nothing elsewhere."""
    if _trim is not None:
        _trim(0)
