"""Issue 16: what the idle supervisor holds. kio imports hypothesis whenever it is installed (it
is here: the test extra), which was 15 MB of the idle supervisor's RSS; the supervisor imports
kio with that import refused (edgebus/server/slim.py), and `edgebus serve` parses only its own
arguments (edgebus/cli/main.py), without importing the other commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgebus import Admin
from edgebus.testing import EmbeddedBroker

pytest.importorskip("hypothesis")  # what is kept out must be installed for this to mean anything


def _mapped(pid: int) -> set[str]:
    return {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
            if len(line.split()) >= 6}


def _hypothesis_shows_in_maps() -> bool:
    """Whether importing hypothesis maps a file of its own (its native extension): what the
    test below looks for, checked on a process that does import it."""
    code = ("import hypothesis.strategies, sys; from pathlib import Path; "
            "sys.exit(0 if '/hypothesis/' in Path('/proc/self/maps').read_text() else 3)")
    return subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_supervisor_with_kafka_listener_does_not_load_hypothesis(broker: EmbeddedBroker) -> None:
    if not _hypothesis_shows_in_maps():
        pytest.skip("this hypothesis maps no file of its own: /proc/PID/maps cannot tell")
    with Admin(socket=broker.socket) as a:
        assert a.status().get("kafka")  # the Kafka listener is up: kio is imported
    maps = _mapped(broker.pid)
    assert any("python" in p for p in maps), maps  # the maps file was read and lists files
    hyp = sorted(p for p in maps if "/hypothesis/" in p)
    assert hyp == [], f"the supervisor mapped hypothesis' files: {hyp}"


def test_kio_imported_without_hypothesis_leaves_hypothesis_importable() -> None:
    code = (
        "import sys\n"
        "from edgebus.server.slim import import_kio_without_hypothesis as f\n"
        "f()\n"
        "assert 'kio.static._phantom' in sys.modules, 'kio not imported'\n"
        "assert 'hypothesis' not in sys.modules, 'hypothesis imported'\n"
        "import hypothesis.strategies\n"  # a later user of hypothesis still gets it
        "print('ok', hypothesis.strategies.integers is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "True"]


def test_serve_parses_without_importing_the_other_commands() -> None:
    code = (
        "import sys\n"
        "from edgebus.cli.main import parse_args\n"
        "a = parse_args(['serve', '--config', 'x.yaml'])\n"
        "print(a.command, a.config, sorted(m for m in sys.modules if m.startswith('edgebus.cli.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == \
        "serve x.yaml ['edgebus.cli.common', 'edgebus.cli.main', 'edgebus.cli.serve']"
