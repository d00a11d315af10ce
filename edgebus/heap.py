"""Keep freed C heap for the next batch instead of faulting it in again (glibc only).

Every batch passes through a few buffers of its own size (a PRODUCE frame built, read off the
socket or ring, a fetch answer read from the log and framed), each freed as soon as it is sent.
With glibc's defaults the free memory at the top of the heap is given back to the kernel once it
exceeds the trim threshold (128 KiB at first, later twice the largest mmapped block seen), and
blocks above the mmap threshold get pages of their own; either way the next batch's buffer
faults its pages in again, zeroed by the kernel. With 1 KiB records and 256 KiB batches that was
about 600 page faults per 1,000 records in the supervisor and in a socket consumer, a third to
a half of their CPU (bench/results/heap-faults.md). `keep_freed_heap` sets the trim threshold to
$EDGEBUS_HEAP_KEEP_MIB (8 MiB) and the mmap threshold to half of it: buffers
of a batch's or an answer's size come from the heap, and up to that much freed memory stays in
the process to be reused. The cost is that much more RSS after a burst; the supervisor returns
it when a large client leaves (edgebus/server/memtrim.py).

Called once per process: by the supervisor at start, by the first Producer or Consumer. It sets
process-wide allocator parameters; EDGEBUS_HEAP_KEEP_MIB=0 leaves them alone. Elsewhere than
glibc (musl) it does nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from edgebus.tuning import HEAP_KEEP_MIB

# mallopt(3) parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

_done = False
_lock = threading.Lock()


def keep_freed_heap(keep_mib: int = HEAP_KEEP_MIB) -> bool:
    """Set glibc's trim and mmap thresholds (module docstring), once per
    process. True if they were set now; False when already done, turned off (0) or not glibc."""
    global _done
    with _lock:
        if _done or keep_mib <= 0:
            return False
        _done = True
        mallopt = libc_function("int(*)(int, int)", "mallopt")
        if mallopt is None:
            return False
        keep = keep_mib << 20
        # Each call returns 1 on success; a C library that rejects one leaves its default.
        return bool(mallopt(M_MMAP_THRESHOLD, keep // 2) & mallopt(M_TRIM_THRESHOLD, keep))


def libc_function(signature: str, name: str) -> Callable[..., int] | None:
    """A function of the C library this process runs on (glibc's allocator tuning: mallopt,
    malloc_trim), `signature` a C function pointer type; None where it has none (musl).

    Called through cffi's backend, which edgebus' C modules (edgebus._records, edgebus.shm._ring)
    have loaded anyway: ctypes, which it replaces, cost the supervisor ~0.4 MB of RSS for two
    calls (issue 16). ctypes remains the fallback where the backend cannot (no cffi)."""
    try:
        import _cffi_backend

        fn = _cffi_backend.load_library(None).load_function(
            _cffi_backend.FFI().typeof(signature), name)
    except AttributeError:  # no such symbol
        return None
    except (ImportError, OSError):
        return _ctypes_function(signature, name)
    return fn


def _ctypes_function(signature: str, name: str) -> Callable[..., int] | None:
    import ctypes

    try:
        fn = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    types = {"int": ctypes.c_int, "size_t": ctypes.c_size_t}
    fn.argtypes = [types[a.strip()] for a in signature.split("(*)(")[1].rstrip(")").split(",")]
    fn.restype = ctypes.c_int
    return fn
