"""edgebus/heap.py: with the heap kept, a batch-sized buffer freed and allocated again reuses its
pages instead of faulting them in again (counted as the process's minor page faults)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning is glibc's")

# A child process (allocator settings are per process): 200 rounds of a 256 KiB batch built
# from pieces and joined, then framed (two transient buffers a round), as the producer did.
_CHILD = """
import resource, sys
from edgebus.heap import keep_freed_heap
print(keep_freed_heap(), file=sys.stderr)
piece = b"x" * 1024
pieces = [piece] * 256
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # warm
    (b"h" + b"".join(pieces)) + b"t"
f0 = faults()
for _ in range(200):
    (b"h" + b"".join(pieces)) + b"t"
print((faults() - f0) / 200)
"""


def _faults_per_round(keep_mib: str) -> float:
    r = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True,
                       env={"EDGEBUS_HEAP_KEEP_MIB": keep_mib, "PATH": ""})
    return float(r.stdout)


def test_kept_heap_reuses_pages_that_glibc_would_give_back() -> None:
    # 256 KiB is 64 pages: glibc's defaults fault most of them in again every round.
    assert _faults_per_round("0") > 32
    assert _faults_per_round("8") < 2


def test_a_bad_value_is_an_error_naming_the_variable() -> None:
    r = subprocess.run([sys.executable, "-c", "import edgebus.heap"], capture_output=True, text=True,
                       env={"EDGEBUS_HEAP_KEEP_MIB": "lots", "PATH": ""})
    assert r.returncode != 0 and "EDGEBUS_HEAP_KEEP_MIB must be a whole number" in r.stderr


def test_libc_functions_come_through_cffi_and_ctypes_alike() -> None:
    """mallopt and malloc_trim through cffi's backend (what the supervisor uses, issue 16) and
    through the ctypes fallback: both call the C library's function; a missing one is None."""
    from edgebus.heap import _ctypes_function, libc_function

    for get in (libc_function, _ctypes_function):
        trim = get("int(*)(size_t)", "malloc_trim")
        mallopt = get("int(*)(int, int)", "mallopt")
        assert trim is not None and mallopt is not None, get
        assert trim(0) in (0, 1)  # 1: memory was released
        assert mallopt(-1, 128 * 1024) == 1  # M_TRIM_THRESHOLD, glibc's default value
        assert get("int(*)(size_t)", "edgebus_no_such_function") is None
