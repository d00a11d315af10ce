"""SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and TLS on the Kafka listener, with real clients:
users made by `edgebus kafka-user add` (SCRAM keys, no password in the file), wrong passwords and
unauthenticated requests refused, the user recorded on the connection; TLS and mutual TLS."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from confluent_kafka import KafkaException
from confluent_kafka import Producer as CKProducer
from confluent_kafka.admin import AdminClient
from kio.schema.metadata.v12.request import MetadataRequest

from edgebus import Admin
from edgebus.server.kafka import sasl
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import connect, create_topic, raw_request, read_frame

pytestmark = pytest.mark.integration

MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def add_user(path: Path, user: str, password: str) -> None:
    r = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "kafka-user", "add", user, "--file",
                        str(path)], input=password + "\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One supervisor for the module's SASL tests (each starts in about a second; the tests only
    read and add connections)."""
    tmp = tmp_path_factory.mktemp("sasl")
    creds = tmp / "kafka-users.yaml"
    add_user(creds, "alice", "wonderland")  # the CLI, as an operator runs it
    sasl.add_user(creds, "bob", "builder")
    text = creds.read_text()
    assert "wonderland" not in text and "builder" not in text and "stored_key" in text
    assert creds.stat().st_mode & 0o777 == 0o600
    # Access control is on by default (owner only): the SASL users get their rights by rule.
    b = EmbeddedBroker(tmp / "broker", config={
        "kafka": {"sasl_mechanisms": MECHANISMS, "sasl_credentials_file": str(creds)},
        "acl": {"rules": ["allow sasl:alice all topic:sec-*", "allow sasl:bob all topic:sec-*"]}})
    try:
        yield b.start()
    finally:
        b.cleanup()


def sasl_conf(broker: EmbeddedBroker, mechanism: str, user: str, password: str) -> dict[str, Any]:
    return {"bootstrap.servers": broker.kafka_bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password}


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_sasl_mechanisms(sasl_broker: EmbeddedBroker, mechanism: str) -> None:
    create_topic(sasl_broker, "sec-" + mechanism.lower())
    p = CKProducer({**sasl_conf(sasl_broker, mechanism, "alice", "wonderland"), "linger.ms": 0})
    p.produce("sec-" + mechanism.lower(), b"hello from " + mechanism.encode())
    assert p.flush(30) == 0
    with Admin(socket=sasl_broker.socket) as a:
        conns = a.status()["kafka"]["listeners"][0]["connections"]
    assert "alice" in {c["principal"] for c in conns}, conns
    del p


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_wrong_password_is_refused(sasl_broker: EmbeddedBroker, mechanism: str) -> None:
    admin = AdminClient({**sasl_conf(sasl_broker, mechanism, "alice", "nope")})
    with pytest.raises(KafkaException) as e:
        admin.list_topics(timeout=3)
    assert "Authentication" in str(e.value) or "authentication" in str(e.value) or "_TRANSPORT" in str(e.value)
    assert "SASL " + mechanism + " authentication failed" in _wait_log(sasl_broker, "authentication failed")


def _wait_log(broker: EmbeddedBroker, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = broker.log()
        if text in log:
            return log
        time.sleep(0.1)
    return broker.log()


def test_requests_before_authentication_close_the_connection(sasl_broker: EmbeddedBroker) -> None:
    with connect(sasl_broker) as s:
        s.sendall(raw_request(3, 12, 1, MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                                         include_topic_authorized_operations=False)))
        s.settimeout(10)
        assert read_frame(s) == b""  # closed, nothing answered


def test_unknown_user_and_other_user(sasl_broker: EmbeddedBroker) -> None:
    with pytest.raises(KafkaException):
        AdminClient(sasl_conf(sasl_broker, "SCRAM-SHA-256", "mallory", "x")).list_topics(timeout=3)
    md = AdminClient(sasl_conf(sasl_broker, "SCRAM-SHA-512", "bob", "builder")).list_topics(timeout=15)
    assert md.cluster_id == "edgebus"


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def tls_broker(make_broker: Callable[..., EmbeddedBroker], tmp_path: Path, ca: trustme.CA,
               mutual: bool) -> EmbeddedBroker:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cfg: dict[str, Any] = {"tls_cert": str(tmp_path / "server.pem"), "tls_key": str(tmp_path / "server.key")}
    if mutual:
        cfg["tls_ca"] = str(tmp_path / "ca.pem")
    return make_broker({"kafka": cfg}).start()


def test_tls(make_broker: Callable[..., EmbeddedBroker], tmp_path: Path, ca: trustme.CA) -> None:
    b = tls_broker(make_broker, tmp_path, ca, mutual=False)
    create_topic(b, "tls")
    conf = {"bootstrap.servers": b.kafka_bootstrap, "security.protocol": "SSL",
            "ssl.ca.location": str(tmp_path / "ca.pem")}
    p = CKProducer({**conf, "linger.ms": 0})
    for i in range(100):
        p.produce("tls", b"secret %d" % i)
    assert p.flush(30) == 0
    md = AdminClient(conf).list_topics(timeout=15)
    assert "tls" in md.topics
    # Plain TCP to a TLS listener: no answer a Kafka client could take for one.
    with socket.create_connection(tuple(b.kafka_bootstrap.rsplit(":", 1)), timeout=10) as s:  # type: ignore[arg-type]
        s.sendall(raw_request(3, 12, 1, MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                                         include_topic_authorized_operations=False)))
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        assert b"edgebus" not in data


def test_mutual_tls(make_broker: Callable[..., EmbeddedBroker], tmp_path: Path, ca: trustme.CA) -> None:
    b = tls_broker(make_broker, tmp_path, ca, mutual=True)
    client = ca.issue_cert("client-1")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    conf = {"bootstrap.servers": b.kafka_bootstrap, "security.protocol": "SSL",
            "ssl.ca.location": str(tmp_path / "ca.pem")}
    with pytest.raises(KafkaException):  # no client certificate
        AdminClient(conf).list_topics(timeout=3)
    md = AdminClient({**conf, "ssl.certificate.location": str(tmp_path / "client.pem"),
                      "ssl.key.location": str(tmp_path / "client.key")}).list_topics(timeout=15)
    assert md.cluster_id == "edgebus"


def test_kafka_user_list_and_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgebus.cli.main import main

    creds = tmp_path / "users.yaml"
    sasl.add_user(creds, "carol", "pw-1")
    sasl.add_user(creds, "dave", "pw-2")
    assert main(["kafka-user", "list", "--file", str(creds)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["carol\tSCRAM-SHA-256, SCRAM-SHA-512", "dave\tSCRAM-SHA-256, SCRAM-SHA-512"]
    assert main(["kafka-user", "remove", "carol", "--file", str(creds)]) == 0
    assert main(["kafka-user", "remove", "carol", "--file", str(creds)]) == 1
    users = sasl.Credentials(creds)
    assert set(users.users) == {"dave"}
    assert users.check_plain("dave", "pw-2") and not users.check_plain("dave", "pw-1")
    creds.chmod(0o644)
    with pytest.raises(Exception, match="chmod 0600"):
        sasl.Credentials(creds)
