"""What importing a lower layer brings with it, in a fresh interpreter (issue 10).

`lint-imports` checks the import statements; this checks what Python really loads, which also
counts a package's `__init__` (importing `edgebus.log` runs `edgebus/__init__.py` first, which
once imported the whole client library and, through it, the rings' C module).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
UPPER = ("edgebus.client", "edgebus.server", "edgebus.shm", "edgebus.cli", "bridges")


def loaded_after(*modules: str) -> set[str]:
    """The edgebus and bridges modules in sys.modules after importing `modules`."""
    code = (f"import sys\nfor m in {list(modules)!r}:\n    __import__(m)\n"
            "print('\\n'.join(m for m in sys.modules if m.split('.')[0] in ('edgebus', 'bridges')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout
    return set(out.split())


def above(loaded: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("modules", [
    ("edgebus.log.partition",),
    ("edgebus.log.manager", "edgebus.log.recovery", "edgebus.log.cleaner"),
])
def test_the_log_loads_no_client_server_or_transport_module(modules: tuple[str, ...]) -> None:
    loaded = loaded_after(*modules)
    assert modules[0] in loaded
    assert above(loaded, (*UPPER, "edgebus.protocol", "edgebus.fastpath")) == []


def test_the_batch_code_loads_no_transport() -> None:
    loaded = loaded_after("edgebus.batch", "edgebus.records")
    assert above(loaded, (*UPPER, "edgebus.protocol", "edgebus.fastpath", "edgebus.log")) == []


def test_the_protocol_and_fast_path_load_no_client_or_server() -> None:
    loaded = loaded_after("edgebus.protocol.registry", "edgebus.fastpath.supervisor",
                          "edgebus.fastpath.produce", "edgebus.fastpath.fetch")
    assert above(loaded, (*UPPER, "edgebus.log")) == []
