"""What edgebus's three cffi build scripts share (edgebus/_records_build.py, shm/_build.py and
shm/_plane_build.py): reading their C sources into one translation unit, finding zlib's and
libdeflate's headers, and the compiler options and libraries that follow from them.

The build scripts load this file by path (`runpy.run_path`), never `import edgebus._cbuild`:
cffi runs a build script with exec before edgebus is installed, and an import would run
edgebus/__init__.py in the build's environment, which has only setuptools and cffi.
"""

from __future__ import annotations

import os
import sysconfig

from cffi import FFI

# edgebus/records.c and the files split from it, in this order: one translation unit wherever
# records.c is read (the later files use its includes, macros and record checks).
RECORDS = ("records.c", "records_fetch.c", "records_kafka.c")


def read_sources(*paths: str) -> str:
    """The C files at `paths` as one translation unit, in that order (a later file calls the
    earlier ones' functions directly)."""
    parts = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            parts.append(f.read())
    return "\n".join(parts) + "\n"


def have_header(name: str) -> bool:
    """Whether the header `name` is where the compiler looks (zlib.h: Debian's python3-dev
    depends on zlib1g-dev, so it nearly always is)."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = [sysconfig.get_path("include"), "/usr/include", "/usr/local/include",
            os.path.join("/usr/include", multiarch)]
    return any(os.path.exists(os.path.join(d, name)) for d in dirs if d)


def builder(module: str, cdef: str, source: str) -> FFI:
    """The FFI builder of `module` (its declarations `cdef`, its C `source`). With zlib's header
    the C code checks batch CRCs itself (EB_HAVE_ZLIB; without it each module says what it
    leaves to Python). libdeflate's CRC-32 where its header is too (Debian: libdeflate-dev), the
    same CRC as zlib's and about 5x faster (records.c EB_CRC32); EDGEBUS_NO_LIBDEFLATE=1 builds
    with zlib's (A/B runs)."""
    zlib = have_header("zlib.h")
    libdeflate = (zlib and have_header("libdeflate.h")
                  and os.environ.get("EDGEBUS_NO_LIBDEFLATE", "") in ("", "0"))
    ffibuilder = FFI()
    ffibuilder.cdef(cdef)
    ffibuilder.set_source(
        module,
        source,
        extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        define_macros=([("EB_HAVE_ZLIB", "1")] if zlib else [])
        + ([("EB_HAVE_LIBDEFLATE", "1")] if libdeflate else []),
        libraries=(["z"] if zlib else []) + (["deflate"] if libdeflate else []),
    )
    return ffibuilder
