"""Keep what the supervisor never runs out of its memory (issue 16: idle RSS).

kio (the Kafka listener's codecs) imports hypothesis whenever it is installed, to register test
strategies for its types. The supervisor never uses them, and in an environment with the test
extra installed that import alone was 15 MB of the idle supervisor's 39 MB RSS (11 MB of Python
objects, 4 MB of hypothesis' own extension and libcrypto pages; bench/results/rss-*.md). A
production install has no hypothesis, so this changes nothing there; it makes a development
checkout's supervisor, and the benchmark's figure, match it.
"""

from __future__ import annotations

import gc
import importlib
import importlib.machinery
import importlib.util
import re
import sys
import types
from collections.abc import Callable
from typing import Any

# The kio module that tries `import hypothesis.strategies` (kio 0.6); the import of any kio
# schema goes through it.
_KIO_TYPES = "kio.static._phantom"


def import_kio_without_hypothesis() -> None:
    """Import kio with `import hypothesis` failing, then undo that, so that a process which
    does want hypothesis later (a test running the supervisor in-process) still gets it. Does
    nothing when hypothesis or kio's types are already imported."""
    if "hypothesis" in sys.modules or _KIO_TYPES in sys.modules:
        return
    sys.modules["hypothesis"] = None  # type: ignore[assignment]  # "import hypothesis" -> ImportError
    try:
        importlib.import_module(_KIO_TYPES)
    except ImportError:
        pass  # no kio: the Kafka listener says so itself when it is set up
    finally:
        if sys.modules.get("hypothesis", 0) is None:
            del sys.modules["hypothesis"]
    import_kio_serial_without_asyncio()


# kio's writers module imports asyncio for one type alias (`Writable = asyncio.StreamWriter |
# IO[bytes]`), and asyncio imports ssl, subprocess and concurrent.futures: 5.3 MB of RSS that
# stayed after the first Kafka request (libcrypto alone 2.9 MB), for a supervisor that runs no
# asyncio. kio is pinned (<0.7), so this is checked against the one version we run.
_KIO_SERIAL = "kio.serial"


def import_kio_serial_without_asyncio() -> None:
    """Import kio.serial with a stand-in `asyncio` holding only the StreamWriter class that
    alias names, then take the stand-in away: a later `import asyncio` gets the real one. Does
    nothing when asyncio or kio.serial are already imported (a process that runs asyncio)."""
    if "asyncio" in sys.modules or _KIO_SERIAL in sys.modules:
        return
    stand_in = types.ModuleType("asyncio", "kio.serial's type alias only (server/slim.py)")
    stand_in.StreamWriter = type("StreamWriter", (), {})  # type: ignore[attr-defined]
    sys.modules["asyncio"] = stand_in
    try:
        importlib.import_module(_KIO_SERIAL)
    except ImportError:
        pass  # no kio: the Kafka listener says so itself
    finally:
        if sys.modules.get("asyncio") is stand_in:
            del sys.modules["asyncio"]


def crc32c_function() -> Callable[[bytes | bytearray | memoryview], int]:
    """crc32c's C function (the `crc32c` package's extension module), loaded without running
    the package's __init__: that imports importlib.metadata (and with it email, zipfile, csv,
    shutil, tempfile, random) only to set __version__, and its command-line module (argparse,
    mmap): 2.2 MB of RSS for one function. The extension is registered under its own name, so a
    later `import crc32c` reuses it."""
    fn: Callable[[bytes | bytearray | memoryview], int] = _extension("crc32c", "_crc32c").crc32c
    return fn


def zlib_ng_crc32() -> Callable[..., int]:
    """zlib-ng's crc32 (the same CRC-32 as zlib's, with carry-less multiplication: 25 times
    faster here), loaded as crc32c_function loads its module: the `zlib_ng` package's __init__
    imports gzip too. ImportError when zlib-ng is not installed."""
    fn: Callable[..., int] = _extension("zlib_ng", "zlib_ng").crc32
    return fn


def _extension(package: str, module: str) -> Any:
    """package.module, an extension module, without running the package's __init__; registered
    under its own name, so that a later import of it reuses it."""
    name = f"{package}.{module}"
    ext = sys.modules.get(name)
    if ext is None:
        pkg = importlib.util.find_spec(package)  # finds the package; runs none of it
        if pkg is None or not pkg.submodule_search_locations:
            raise ImportError(f"{package} is not installed: pip install {package.replace('_', '-')}")
        spec = importlib.machinery.PathFinder.find_spec(name, list(pkg.submodule_search_locations))
        if spec is None or spec.loader is None:
            raise ImportError(f"{name} not found in {list(pkg.submodule_search_locations)}")
        ext = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(ext)
        sys.modules[name] = ext
    return ext


# dataclasses imports inspect (and with it ast, dis and opcode: ~0.7 MB of Python objects) for one
# call: `inspect.signature(cls)`, to write the __doc__ of a dataclass that has none (87 of the
# supervisor's at idle). Nothing else in the idle supervisor imports them.
_INSPECT_USERS = ("dataclasses",)


class _InitSignature:
    """str(inspect.signature(cls)) for a class made by the ordinary type.__call__, object.__new__
    and a plain Python __init__ (what dataclasses writes), read from __init__'s code, defaults
    and annotations as inspect reads them (tests/server/test_slim_inspect.py compares the two for
    every dataclass the supervisor makes)."""

    def __init__(self, init: Any) -> None:
        self.init = init

    def __str__(self) -> str:
        f = self.init
        code = f.__code__
        names = code.co_varnames
        npos, nkw = code.co_argcount, code.co_kwonlyargcount
        defaults = f.__defaults__ or ()
        kwdefaults = f.__kwdefaults__ or {}
        ann = f.__annotations__
        first_default = npos - len(defaults)
        params = [_param(names[i], ann, defaults[i - first_default] if i >= first_default
                         else _NO_DEFAULT) for i in range(1, npos)]  # (not self)
        if nkw:
            params.append("*")
            params += [_param(n, ann, kwdefaults.get(n, _NO_DEFAULT))
                       for n in names[npos:npos + nkw]]
        ret = f" -> {_annotation(ann['return'])}" if "return" in ann else ""
        return f"({', '.join(params)}){ret}"


_NO_DEFAULT = object()
_PLAIN_ARGS = 0x04 | 0x08  # CO_VARARGS | CO_VARKEYWORDS: *args or **kwargs, left to inspect


def _param(name: str, ann: dict[str, Any], default: Any) -> str:
    """inspect.Parameter.__str__ for a positional-or-keyword or keyword-only parameter."""
    text = name
    if name in ann:
        text += f": {_annotation(ann[name])}"
    if default is not _NO_DEFAULT:
        text += f" = {default!r}" if name in ann else f"={default!r}"
    return text


def _annotation(a: Any) -> str:
    """inspect.formatannotation."""
    if getattr(a, "__module__", None) == "typing":
        return re.sub(r"[\w\.]+", lambda m: m.group().removeprefix("typing."), repr(a))
    if isinstance(a, types.GenericAlias):
        return str(a)
    if isinstance(a, type):
        return a.__qualname__ if a.__module__ == "builtins" else f"{a.__module__}.{a.__qualname__}"
    return repr(a)


class _InspectForDataclasses(types.ModuleType):
    """The `inspect` dataclasses sees (import_dataclasses_without_inspect): its one call made
    without inspect for the classes it makes; anything else from the real module, imported
    then."""

    @staticmethod
    def signature(obj: Any) -> Any:
        init = vars(type).get("__call__")
        code = getattr(getattr(obj, "__init__", None), "__code__", None)
        if (isinstance(obj, type) and type(obj).__call__ is init and obj.__new__ is object.__new__
                and code is not None and not code.co_flags & _PLAIN_ARGS
                and not code.co_posonlyargcount and code.co_argcount >= 1):
            return _InitSignature(obj.__init__)  # type: ignore[misc]
        return importlib.import_module("inspect").signature(obj)

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module("inspect"), name)


def import_dataclasses_without_inspect() -> None:
    """Import dataclasses with a stand-in `inspect` (_InspectForDataclasses), then take the
    stand-in away: a later `import inspect` gets the real one, and dataclasses keeps the
    stand-in. For the supervisor's process only (cli/main.py, before `serve`'s imports). Does
    nothing when dataclasses or inspect are already imported (a process that has them anyway)."""
    if "inspect" in sys.modules or any(m in sys.modules for m in _INSPECT_USERS):
        return
    stand_in = _InspectForDataclasses("inspect", "dataclasses' inspect.signature (server/slim.py)")
    sys.modules["inspect"] = stand_in
    try:
        for m in _INSPECT_USERS:
            importlib.import_module(m)
    finally:
        if sys.modules.get("inspect") is stand_in:
            del sys.modules["inspect"]


# What only `edgebus serve`'s start imports: argparse's gettext lookup imports locale (its alias
# tables: ~0.55 MB), and its help formatter shutil (cli/serve.py tells it the width instead);
# PyYAML (~0.9 MB) reads the config files (config_yaml.py) and is imported again only by a
# reload; argparse and its gettext (~0.3 MB), once the arguments are parsed (the CLI modules hold
# no global `import argparse` and cli/main.py no Namespace for serve); then what only PyYAML
# imported (datetime, base64: ~0.3 MB). ~1.7 MB of Python objects
# together that the supervisor never uses again. In rounds: a module is let go once the ones
# that referred to it are.
START_ONLY = (("locale", "shutil", "bz2", "lzma", "yaml", "argparse", "gettext"),
              ("datetime", "base64"))


def without_libyaml() -> None:
    """Before the config is read: PyYAML without its C extension. The supervisor reads YAML with
    the pure-Python SafeLoader anyway (config_yaml.py), and an extension module keeps its globals
    (PyYAML's error and node classes) for the life of the process, so PyYAML's modules could not
    be let go afterwards. For the supervisor's process only (cli/serve.py)."""
    if "yaml" not in sys.modules:
        sys.modules.setdefault("yaml._yaml", None)  # type: ignore[arg-type]  # -> ImportError


def forget_start_only_modules() -> list[str]:
    """Drop START_ONLY (a package with its submodules) from sys.modules before the supervisor's
    own modules are imported, so that those reuse the memory; a later `import shutil` (a rare
    removal in the log manager) or `import yaml` (a reload) imports it again. A module another
    module still refers to (a global `import locale`) is kept: its memory would not be freed.
    Returns the names dropped."""
    dropped = []
    for names in START_ONLY:
        for name in names:
            mod = sys.modules.get(name)
            # References: sys.modules, `mod`, getrefcount's argument; more is someone's global.
            if mod is not None and sys.getrefcount(mod) <= 3:
                family = [m for m in sys.modules
                          if m.startswith(f"{name}.") and sys.modules[m] is not None]
                for m in [name, *family]:
                    del sys.modules[m]
                dropped += [name, *family]
            del mod
        gc.collect()  # their functions and dicts refer to each other: free them now
    return dropped


def forget_start_garbage() -> None:
    """Once listening: empty the regular-expression cache (the patterns the start compiled, PyYAML's
    resolvers among them, are kept there after their modules are gone; a module's own compiled
    patterns stay with it) and collect the start's reference cycles, before the heap's free pages
    go back to the kernel (memtrim)."""
    re.purge()
    gc.collect()
