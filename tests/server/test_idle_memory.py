"""Issue 16: what the idle supervisor holds. kio imports hypothesis whenever it is installed (it
is here: the test extra), which was 15 MB of the idle supervisor's RSS; the supervisor imports
kio with that import refused (edgebus/server/slim.py), and `edgebus serve` parses only its own
arguments (edgebus/cli/main.py), without importing the other commands. The Kafka protocol
package (kio, edgebus/server/kafka/: ~2 MB) is imported at the first Kafka connection
(kafka/front.py), difflib only for a configuration error, and the modules only argument parsing
imports (locale, shutil) are dropped before the supervisor's own are imported. Round 3 (rss3):
psutil is never imported (status and metrics read /proc/self: edgebus/procmetrics.py); the
replica handlers are made at a link's first request and the log cleaner at the first cleaning
(server/lazy.py, server/cleaning.py); the Kafka protocol comes without asyncio, ssl and
importlib.metadata (server/slim.py). Each is checked absent at idle and present, and working,
after its first use."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import yaml
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import Producer as CKProducer
from confluent_kafka import TopicPartition as CKTopicPartition
from prometheus_client.parser import text_string_to_metric_families

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.client.replica import ReplicaLink
from edgebus.errors import AuthenticationError
from edgebus.server import broker as broker_module
from edgebus.server.dispatch import TXN_APIS
from edgebus.server.handlers.txn import TxnHandlers
from edgebus.server.txn import state as txn_state
from edgebus.testing import EmbeddedBroker, wait_for

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
            "_lzma", "_bz2", "yaml._yaml",  # extension modules: never unloaded, so never imported
            # rss3: made at first use (server/lazy.py, server/cleaning.py), or never (psutil).
            "psutil", "edgebus.server.handlers.replica", "edgebus.log.cleaner", "queue",
            "edgebus.server.txn.coordinator", "edgebus.server.txn.state",
            "edgebus.server.handlers.txn",
            # mallopt and malloc_trim through cffi's backend, not ctypes (edgebus/heap.py)
            "ctypes", "_ctypes",
            # s26: dataclasses' inspect is a stand-in (server/slim.py), so not inspect and what
            # only it imports (~0.7 MB; tests/server/test_slim_inspect.py)
            "inspect", "ast", "_ast", "dis", "opcode", "_opcode",
            # s26: argparse and its gettext, let go once serve's arguments are parsed
            "argparse", "gettext")
TXN = {"edgebus.server.txn.coordinator", "edgebus.server.handlers.txn"}
# What the Kafka protocol's first use must not bring either (server/slim.py): kio's writers'
# asyncio (with ssl: 5.3 MB), crc32c's package __init__ (importlib.metadata, email: 2.2 MB).
NOT_WITH_KAFKA = ("asyncio", "ssl", "_ssl", "importlib.metadata", "email", "crc32c", "psutil")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


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
    with Admin(socket=broker.socket) as a:
        assert a.status()["kafka"]["listeners"], "the Kafka listener is up"
    after_status = _modules(broker, out)
    assert sorted(m for m in after_status if m.startswith("kio")) == []
    assert sorted(m for m in DEFERRED if m in after_status) == []  # psutil among them

    assert _kafka_round_trip(broker, "kafka-first") == [(b"k0", b"v0"), (b"k1", b"v1")]
    used = _modules(broker, out)
    # kio's readers and writers, and crc32c's C function (a produce's batch CRC), are used...
    assert {"kio", "edgebus.server.kafka.apis", "edgebus.server.kafka.setup", "kio.serial",
            "crc32c._crc32c"} <= used
    # ...without what only their packages' imports brought.
    assert sorted(m for m in NOT_WITH_KAFKA if m in used) == []
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


def test_status_and_metrics_read_proc_not_psutil(make_broker: Callable[..., EmbeddedBroker],
                                                 tmp_path: Path) -> None:
    """The status request and the Prometheus scrape report the process's figures from /proc
    (procmetrics.self_usage) without importing psutil, which stayed in the RSS (~1.1 MB here);
    the figures are psutil's, read from outside. The endpoint writes its text without
    prometheus-client (server/promtext.py: 8 MB less), in a format its parser reads."""
    out = tmp_path / "modules.txt"
    broker = make_broker({"metrics": {"listen": "127.0.0.1:0"}}).start(
        env={"EDGEBUS_TEST_HOOKS": "1", "EDGEBUS_TEST_MODULES_FILE": str(out)})
    port = broker.metrics_port
    idle_kb = _rss_kb(broker.pid)
    # Over the socket: an shm client's rings (and the ring module) are not the status' cost.
    with Admin(socket=broker.socket, transport="socket") as a:
        a.status()  # the first: psutil's import was here
        st = a.status()  # the second has a CPU percent too
        proc = psutil.Process(broker.pid)
        with proc.oneshot():
            threads, fds, rss = proc.num_threads(), proc.num_fds(), proc.memory_info().rss
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert not {"psutil", "prometheus_client", "ssl"} & _modules(broker, out)  # promtext.py
    assert {f.name for f in text_string_to_metric_families(text)} >= {
        "edgebus_records_in", "edgebus_fsync_duration_seconds", "process_cpu_seconds"}
    assert st["threads"] == threads and st["pid"] == broker.pid
    assert abs(st["open_fds"] - fds) <= 1  # the scrape's connection may come and go between
    assert abs(st["rss_bytes"] - rss) < 2 * 2**20
    assert st["cpu_s"] > 0 and "cpu_percent" in st
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line[:1] not in ("#", ""))
    for name in ("edgebus_process_resident_memory_bytes", "edgebus_process_cpu_seconds_total",
                 "edgebus_process_open_fds", "process_resident_memory_bytes",
                 "process_cpu_seconds_total", "process_open_fds"):
        assert float(samples[name]) > 0, name
    # psutil's import was 1.1 MB that stayed; what is left of a status and a scrape is their
    # answers' buffers, returned to the heap.
    grown = _rss_kb(broker.pid) - idle_kb
    assert grown < 512, f"the supervisor's RSS grew by {grown} kB after a status and a scrape"


def test_replica_handlers_are_made_at_a_links_first_request(
        make_broker: Callable[..., EmbeddedBroker], tmp_path: Path) -> None:
    out = tmp_path / "modules.txt"
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"gw-src": "s" * 24}))
    tokens.chmod(0o600)
    broker = make_broker({"replica": {"listen": "127.0.0.1:0", "node": "gw-dst",
                                      "tokens_file": str(tokens)}}).start(
        env={"EDGEBUS_TEST_HOOKS": "1", "EDGEBUS_TEST_MODULES_FILE": str(out)})
    address = broker.replica_address
    idle = _modules(broker, out)
    assert "edgebus.server.listeners.tcp" in idle  # the replica listener is up...
    assert "edgebus.server.handlers.replica" not in idle  # ...without its handlers, and
    assert "ssl" not in idle  # without ssl when it has no TLS (listeners/tls.py: ~4 MB)
    with pytest.raises(AuthenticationError, match="replica link refused"):
        ReplicaLink(address, "gw-src", "wrong" * 5, timeout=10)
    assert "edgebus.server.handlers.replica" in _modules(broker, out)
    with ReplicaLink(address, "gw-src", "s" * 24, timeout=10) as link:
        assert link.peer_node == "gw-dst"
        assert link.describe("not-there") is None
    assert "ssl" not in _modules(broker, out)
    assert broker.stop() == 0


def test_log_cleaner_is_loaded_at_the_first_cleaning(make_broker: Callable[..., EmbeddedBroker],
                                                     tmp_path: Path) -> None:
    out = tmp_path / "modules.txt"
    broker = make_broker({"log": {"cleaner_interval_ms": 100}}).start(
        env={"EDGEBUS_TEST_HOOKS": "1", "EDGEBUS_TEST_MODULES_FILE": str(out)})
    with Admin(socket=broker.socket) as a:
        a.create_topic("kettles", 1, config={"cleanup.policy": "compact",
                                             "segment_bytes": 16384})
        assert a.status()["cleaner"]["cleanings"] == 0
    assert "edgebus.log.cleaner" not in _modules(broker, out)  # one segment: nothing to clean
    with Producer(socket=broker.socket, acks="durable") as p:
        for _batch in range(4):  # four batches of ~25 KB: a segment each (16 KiB segments)
            for i in range(200):
                p.send("kettles", b"%05d" % i * 20, key=b"kettle-%d" % (i % 20))
            p.flush()

    def cleaned() -> bool:
        with Admin(socket=broker.socket) as a:
            return bool(a.status()["cleaner"]["cleanings"] >= 1)

    wait_for(cleaned, 30, "a cleaning of the compacted topic")
    assert "edgebus.log.cleaner" in _modules(broker, out)
    with Admin(socket=broker.socket) as a:
        c = a.status()["cleaner"]
    assert c["records_removed"] > 0 and c["errors"] == 0, c
    assert broker.stop() == 0


def _read(sock: str, topic: str) -> list[bytes | None]:
    tp = TopicPartition(topic, 0)
    with Consumer(socket=sock, auto_offset_reset="earliest") as c:
        c.assign([tp])
        got: list[bytes | None] = []
        deadline = time.monotonic() + 20
        while c.position(tp) < c.end_offsets([tp])[tp] and time.monotonic() < deadline:
            got += [r.value for recs in c.poll(timeout_ms=500).values() for r in recs]
        return got


def test_transaction_coordinator_is_made_at_first_use_or_at_start_when_state_remains(
        make_broker: Callable[..., EmbeddedBroker], tmp_path: Path) -> None:
    out = tmp_path / "modules.txt"
    env = {"EDGEBUS_TEST_HOOKS": "1", "EDGEBUS_TEST_MODULES_FILE": str(out)}
    broker = make_broker({"kafka": {"enabled": False}}).start(env=env)
    with Admin(socket=broker.socket) as a:
        a.create_topic("t", 1)
    with Producer(socket=broker.socket, acks="durable") as p:  # no producer id: no coordinator
        p.send("t", b"plain", partition=0)
        p.flush()
    assert sorted(TXN & _modules(broker, out)) == []
    with Producer(socket=broker.socket, acks="durable", enable_idempotence=True) as p:
        p.send("t", b"idempotent", partition=0)  # INIT_PRODUCER_ID, then a sequenced batch
        p.flush()
    assert _modules(broker, out) >= TXN
    assert _read(broker.socket, "t") == [b"plain", b"idempotent"]

    # Restarted with no transactional id in the state: made at the first use again.
    assert broker.stop() == 0
    broker.start(env=env)
    assert sorted(TXN & _modules(broker, out)) == []
    p = Producer(socket=broker.socket, transactional_id="tx-1", linger_ms=1)
    try:
        p.init_transactions()
        p.begin_transaction()
        p.send("t", b"aborted", partition=0)
        p.abort_transaction()
        p.begin_transaction()
        p.send("t", b"committed", partition=0)
        p.commit_transaction()
    finally:
        p.close()
    # Restarted with a transactional id and an aborted range: made at start, and a native
    # fetch (committed data only, txn/coordinator.py native_view) still drops the aborted record.
    assert broker.stop() == 0
    broker.start(env=env)
    assert _modules(broker, out) >= TXN
    assert _read(broker.socket, "t") == [b"plain", b"idempotent", b"committed"]
    assert broker.stop() == 0


def test_the_lazy_transaction_tables_agree_with_the_modules() -> None:
    """What broker.py and dispatch.py name without importing server/txn/: the same as there."""
    assert broker_module.TXN_STATE_FILES == (txn_state.FILE, txn_state.OLD_FILE)
    handlers = object.__new__(TxnHandlers)  # table() only names bound methods
    assert {int(k): n for k, n in TXN_APIS.items()} == \
        {k: h.__name__ for k, h in handlers.table().items()}


def test_http_application_is_made_at_the_first_http_connection(
        make_broker: Callable[..., EmbeddedBroker], tmp_path: Path) -> None:
    out = tmp_path / "modules.txt"
    broker = make_broker({"http": {"enabled": True, "listen": "127.0.0.1:0"}}).start(
        env={"EDGEBUS_TEST_HOOKS": "1", "EDGEBUS_TEST_MODULES_FILE": str(out)})
    port = broker.http_port
    http_app = {"edgebus.server.http.api", "edgebus.server.listeners.http_connection", "h11"}
    idle = _modules(broker, out)
    assert "edgebus.server.listeners.http" in idle  # listening...
    assert sorted(http_app & idle) == []  # ...without the application (~0.8 MB)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=10) as r:
        assert json.loads(r.read())["pid"] == broker.pid
    assert _modules(broker, out) >= http_app
    assert broker.stop() == 0


GROUPS = {"edgebus.server.groups.handlers", "edgebus.server.groups.coordinator",
          "edgebus.server.groups.offsets", "edgebus.server.groups.assignors"}


def test_consumer_groups_are_made_at_first_use_or_at_start_when_offsets_remain(
        make_broker: Callable[..., EmbeddedBroker], tmp_path: Path) -> None:
    """An idle supervisor with nothing in __consumer_offsets has not loaded the group modules
    (~0.5 MB, bench/results/issue16-rss-left27.md), through native produce and status requests;
    the topic is there from the start all the same. The first group request makes them and
    works; after a restart with a commit in the topic they are made at start (the commit's
    replay), and the commit and the group are there."""
    out = tmp_path / "modules.txt"
    env = {"EDGEBUS_TEST_HOOKS": "1", "EDGEBUS_TEST_MODULES_FILE": str(out)}
    broker = make_broker().start(env=env)
    with Admin(socket=broker.socket) as a:
        a.create_topic("g", 1)
        assert a.status()["topics"]
    with Producer(socket=broker.socket) as p:
        for i in range(3):
            p.send("g", b"r%d" % i, partition=0)
        p.flush()
    assert sorted(GROUPS & _modules(broker, out)) == []
    assert (Path(broker.data_dir) / "__consumer_offsets-0").is_dir()
    with Admin(socket=broker.socket) as a:
        assert a.list_groups() == []  # the first group request: made, and answered
    assert _modules(broker, out) >= GROUPS
    with Consumer("g", socket=broker.socket, group_id="grp", auto_offset_reset="earliest",
                  enable_auto_commit=False) as c:
        got: list[bytes | None] = []
        deadline = time.monotonic() + 30
        while len(got) < 3 and time.monotonic() < deadline:
            got += [r.value for recs in c.poll(timeout_ms=500).values() for r in recs]
        assert got == [b"r0", b"r1", b"r2"]
        c.commit()

    # Restarted with a commit in __consumer_offsets: made at start.
    assert broker.stop() == 0
    broker.start(env=env)
    assert _modules(broker, out) >= GROUPS
    with Admin(socket=broker.socket) as a:
        assert [g.group_id for g in a.list_groups()] == ["grp"]
        assert a.list_group_offsets("grp")[TopicPartition("g", 0)].offset == 3
    assert broker.stop() == 0

    # A fresh data directory whose first group use is a Kafka client's commit (kio loads
    # the groups with the Kafka front end) keeps it across a restart too.
    k = make_broker(name="kafka-first").start(env=env)
    with Admin(socket=k.socket) as a:
        a.create_topic("kg", 1)
    assert sorted(GROUPS & _modules(k, out)) == []
    c = CKConsumer({"bootstrap.servers": k.kafka_bootstrap, "group.id": "kgrp",
                    "enable.auto.commit": False})
    try:
        c.commit(offsets=[CKTopicPartition("kg", 0, 0)], asynchronous=False)
    finally:
        c.close()
    k.restart()
    with Admin(socket=k.socket) as a:
        assert a.list_group_offsets("kgrp")[TopicPartition("kg", 0)].offset == 0
    assert k.stop() == 0
