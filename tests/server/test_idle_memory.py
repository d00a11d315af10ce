"""Issue 16: what the idle supervisor holds. kio imports hypothesis whenever it is installed (it
is here: the test extra), which was 15 MB of the idle supervisor's RSS; the supervisor imports
kio with that import refused (edgebus/server/slim.py), and `edgebus serve` parses only its own
arguments (edgebus/cli/main.py), without importing the other commands. The Kafka protocol
package (kio, edgebus/server/kafka/: ~2 MB) is imported at the first Kafka connection
(kafka/front.py), difflib only for a configuration error, and the modules only argument parsing
imports (locale, shutil) are dropped before the supervisor's own are imported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import Producer as CKProducer
from confluent_kafka import TopicPartition as CKTopicPartition

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


def _kafka_round_trip(broker: EmbeddedBroker, topic: str) -> list[tuple[bytes, bytes]]:
    """Produce two records with librdkafka and read them back: the Kafka front end works."""
    with Admin(socket=broker.socket) as a:
        a.create_topic(topic, 1)
    p = CKProducer({"bootstrap.servers": broker.kafka_bootstrap, "linger.ms": 0})
    for i in range(2):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=0)
    assert p.flush(30) == 0
    c = CKConsumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": "unused",
                    "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    try:
        c.assign([CKTopicPartition(topic, 0, 0)])
        got: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None:
                assert m.error() is None, m.error()
                got.append((m.key(), m.value()))
        return got
    finally:
        c.close()


def _modules(broker: EmbeddedBroker, out: Path) -> set[str]:
    """The supervisor's sys.modules, written on SIGUSR1 by its test hook (server/testhooks.py)."""
    out.unlink(missing_ok=True)
    assert broker.proc is not None
    os.kill(broker.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not out.exists():
        assert time.monotonic() < deadline, "the supervisor wrote no module list"
        time.sleep(0.02)
    return set(out.read_text().split())


# Imported only when used: the Kafka protocol (kio and the handler modules), difflib (the
# "did you mean" of a configuration error), argparse's locale and shutil, PyYAML and its datetime
# (dropped once the config is read: server/slim.py).
DEFERRED = ("kio", "kio.schema", "kio.index", "edgebus.server.kafka.apis",
            "edgebus.server.kafka.codec", "edgebus.server.kafka.setup", "edgebus.server.kafka.data",
            "edgebus.server.kafka.fetch", "difflib", "locale", "shutil", "yaml", "datetime",
            "_lzma", "_bz2", "yaml._yaml")  # extension modules: never unloaded, so never imported


def test_idle_supervisor_loads_the_kafka_protocol_at_the_first_kafka_connection(
        make_broker: Callable[..., EmbeddedBroker], tmp_path: Path) -> None:
    out = tmp_path / "modules.txt"
    broker = make_broker().start(env={"EDGEBUS_TEST_HOOKS": "1",
                                      "EDGEBUS_TEST_MODULES_FILE": str(out)})
    with Admin(socket=broker.socket) as a:
        a.create_topic("native-first", 1)  # native requests do not load it either
    idle = _modules(broker, out)
    assert "edgebus.server.broker" in idle and "edgebus.server.kafka.front" in idle  # a real list
    assert sorted(m for m in DEFERRED if m in idle) == []
    assert sorted(m for m in idle if m.startswith("kio")) == []
    with Admin(socket=broker.socket) as a:  # (the first status request imports psutil and more)
        assert a.status()["kafka"]["listeners"], "the Kafka listener is up"
    assert sorted(m for m in _modules(broker, out) if m.startswith("kio")) == []

    assert _kafka_round_trip(broker, "kafka-first") == [(b"k0", b"v0"), (b"k1", b"v1")]
    used = _modules(broker, out)
    assert {"kio", "edgebus.server.kafka.apis", "edgebus.server.kafka.setup"} <= used
    assert broker.stop() == 0  # parked fetches and the loaded front end shut down cleanly


def test_supervisor_with_kafka_listener_does_not_load_hypothesis(broker: EmbeddedBroker) -> None:
    if not _hypothesis_shows_in_maps():
        pytest.skip("this hypothesis maps no file of its own: /proc/PID/maps cannot tell")
    # A Kafka client's requests load the protocol package, kio included (kafka/front.py).
    assert _kafka_round_trip(broker, "t") == [(b"k0", b"v0"), (b"k1", b"v1")]
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
