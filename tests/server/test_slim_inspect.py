"""The supervisor's dataclasses without inspect (edgebus/server/slim.py,
import_dataclasses_without_inspect; issue 16, idle RSS): dataclasses imports inspect, and with it
ast, dis and opcode (~0.7 MB of the idle supervisor), for one call, the signature it writes into
the __doc__ of a dataclass that has none. The supervisor's process gives it a stand-in that writes
that text from the fields. These check, each in a fresh interpreter, that the docs are the same
text inspect writes for every dataclass the supervisor makes (at idle and once the Kafka protocol
and the lazily made handlers are loaded), that the real inspect stays out, and that a later
`import inspect` anywhere still gets the real module. (That an idle supervisor has not imported
them: tests/server/test_idle_memory.py, DEFERRED.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

# Every dataclass the supervisor may make: its idle modules, the Kafka protocol, the handlers made
# at first use (server/lazy.py), the log cleaner.
_DOCS = r"""
import importlib, json, sys
from edgebus.server import slim
if sys.argv[1] == "slim":
    slim.import_dataclasses_without_inspect()
import dataclasses
for m in ("edgebus.cli.serve", "edgebus.server.supervisor", "edgebus.server.broker"):
    importlib.import_module(m)
idle = {"ast": "ast" in sys.modules, "inspect": "inspect" in sys.modules}
slim.import_kio_without_hypothesis()  # as the supervisor imports kio (kafka/front.py)
for m in ("edgebus.server.kafka.front", "edgebus.server.kafka.apis", "edgebus.server.kafka.setup",
          "edgebus.server.handlers.replica", "edgebus.server.handlers.txn",
          "edgebus.server.txn.coordinator", "edgebus.log.cleaner"):
    importlib.import_module(m)
docs = {}
for name, mod in list(sys.modules.items()):
    for k, v in list(vars(mod).items()) if mod is not None else ():
        if isinstance(v, type) and dataclasses.is_dataclass(v) and v.__module__ == name:
            docs[f"{name}.{k}"] = v.__doc__
print(json.dumps({"docs": docs, **idle}))
"""


def _docs(mode: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", _DOCS, mode], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_the_stand_in_writes_the_docs_inspect_writes() -> None:
    slim, real = _docs("slim"), _docs("real")
    assert real["ast"] and real["inspect"]  # the control: dataclasses imports them
    docs = slim["docs"]
    assert isinstance(docs, dict) and len(docs) > 100, "too few dataclasses: nothing was compared"
    # a dataclass without a docstring of its own gets the signature (the case the stand-in serves)
    assert docs["edgebus.protocol.messages.ConfigEntry"] == "ConfigEntry(name: 'str', value: 'str')"
    assert docs == real["docs"]
    # (kio, at the first Kafka connection, imports inspect itself: the idle modules do not)
    assert not slim["ast"] and not slim["inspect"], "the real inspect was imported anyway"


def test_a_later_import_of_inspect_gets_the_real_module() -> None:
    code = (
        "import sys\n"
        "from edgebus.server.slim import import_dataclasses_without_inspect as f\n"
        "f()\n"
        "import dataclasses\n"
        "assert 'inspect' not in sys.modules and 'ast' not in sys.modules\n"
        "import inspect\n"  # someone else's import: the real module, not the stand-in
        "assert inspect is not dataclasses.inspect and inspect.isfunction(f)\n"
        "print(inspect.signature(f), dataclasses.inspect.getsourcefile(f) == inspect.getsourcefile(f))\n"
        "@dataclasses.dataclass\n"
        "class C:\n"
        "    x: int\n"
        "    y: list = dataclasses.field(default_factory=list)\n"
        "    z: str = 'a'\n"
        "print(C.__doc__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["() -> 'None' True",
                                       "C(x: int, y: list = <factory>, z: str = 'a')"]


def test_nothing_is_done_when_dataclasses_is_already_imported() -> None:
    code = (
        "import dataclasses, sys\n"
        "from edgebus.server.slim import import_dataclasses_without_inspect as f\n"
        "f()\n"
        "print(type(dataclasses.inspect).__name__, 'inspect' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["module", "True"]
