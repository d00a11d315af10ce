"""Keep what the supervisor never runs out of its memory (issue 16: idle RSS).

kio (the Kafka listener's codecs) imports hypothesis whenever it is installed, to register test
strategies for its types. The supervisor never uses them, and in an environment with the test
extra installed that import alone was 15 MB of the idle supervisor's 39 MB RSS (11 MB of Python
objects, 4 MB of hypothesis' own extension and libcrypto pages; bench/results/rss-*.md). A
production install has no hypothesis, so this changes nothing there; it makes a development
checkout's supervisor, and the benchmark's figure, match it.
"""

from __future__ import annotations

import importlib
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
