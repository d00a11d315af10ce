"""Only for the C part: pyproject.toml holds everything else.

setuptools runs cffi's `cffi_modules` hook on `pip install` (editable or not), which compiles
edgebus/shm/ring.c and take.c into edgebus.shm._ring (the shared-memory ring, a consumer's
one-call take) and edgebus/records.c into edgebus._records (the record-batch loops) with the
system C compiler and Python's headers; and edgebus/onestep*.c (Python's C API, no cffi) into
edgebus._onestep (a producer's one-record send()).

Both are optional: on a board without a compiler (or without Python's headers) the install
succeeds without them, says so, and edgebus runs on its Python code: clients use the Unix socket
instead of the rings and batches are encoded and checked per record in Python
(docs/ARCHITECTURE.md, "Without the C module"). EDGEBUS_REQUIRE_C=1 makes a failed build fail
the install instead (for packagers who want the fast path or nothing).
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed compile into a warning, unless EDGEBUS_REQUIRE_C=1."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # no compiler at all: setuptools fails before any extension
            self._skipped("all C extensions", e)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as e:  # CompileError, DistutilsExecError, a missing Python.h, ...
            self._skipped(ext.name, e)

    def _skipped(self, what: str, e: Exception) -> None:
        if os.environ.get("EDGEBUS_REQUIRE_C") == "1":
            raise e
        print(f"edgebus: WARNING: could not build {what} ({type(e).__name__}: {e}); installing "
              "without it: clients use the Unix socket instead of shared-memory rings, and "
              "record batches are handled in Python (slower). Install gcc and python3-dev and "
              "reinstall for the fast path.", file=sys.stderr)


# A producer's one-record send() in C (edgebus/onestep.c: Python's C API, which cffi's API mode
# cannot give: it takes and makes Python objects). Optional like the rest.
# One extension from several files (edgebus/onestep.c says which holds what; onestep.h is their
# private header: a change to it rebuilds them all).
ONESTEP = Extension("edgebus._onestep",
                    ["edgebus/onestep.c", "edgebus/onestep_sender.c", "edgebus/onestep_send.c",
                     "edgebus/onestep_acks.c", "edgebus/onestep_settle.c", "edgebus/onestep_reap.c"],
                    depends=["edgebus/onestep.h"], extra_compile_args=["-O2"])

setup(ext_modules=[ONESTEP],
      cffi_modules=["edgebus/shm/_build.py:ffibuilder", "edgebus/_records_build.py:ffibuilder",
                     "edgebus/shm/_plane_build.py:ffibuilder"],
      cmdclass={"build_ext": OptionalBuildExt})
