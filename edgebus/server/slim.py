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
import re
import sys

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


# What only `edgebus serve`'s start imports: argparse's gettext lookup imports locale (its alias
# tables: ~0.55 MB), and its help formatter shutil (cli/serve.py tells it the width instead);
# PyYAML (~0.9 MB) reads the config files (config_yaml.py) and is imported again only by a
# reload; then what only PyYAML imported (datetime, base64: ~0.3 MB). ~1.7 MB of Python objects
# together that the supervisor never uses again. In rounds: a module is let go once the ones
# that referred to it are.
START_ONLY = (("locale", "shutil", "bz2", "lzma", "yaml"), ("datetime", "base64"))


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
