"""Only for the C part: pyproject.toml holds everything else.

setuptools runs cffi's `cffi_modules` hook on `pip install` (editable or not), which compiles
edgebus/shm/ring.c into edgebus.shm._ring (the shared-memory ring) and edgebus/records.c into
edgebus._records (the record-batch loops) with the system C compiler and Python's headers.
"""

from setuptools import setup

setup(cffi_modules=["edgebus/shm/_build.py:ffibuilder", "edgebus/_records_build.py:ffibuilder"])
