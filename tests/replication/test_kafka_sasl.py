"""The Kafka target with the security settings Kafka users write (SASL_SSL, SCRAM-SHA-512, a CA),
against a real Kafka-protocol server that enforces them: another edgebus supervisor's Kafka
listener (TLS and SASL, docs/KAFKA.md; Tansu cannot run with SASL here). The right password
ships the source's records; a wrong one is refused with a clear error on both sides: the
replicator logs the authentication failure and the server logs the refused login, and nothing
reaches the destination."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.server.kafka import sasl
from edgebus.testing import EmbeddedBroker

from .conftest import NODE, Replicators, secret, wait_for

pytestmark = pytest.mark.integration
pytest.importorskip("confluent_kafka", reason="confluent-kafka is not installed: pip install -e '.[test]'")

USER, PASSWORD = "gw-7", "a-long-kafka-password-of-gw-7"


@pytest.fixture
def kafka_server(make_broker, tmp_path: Path) -> EmbeddedBroker:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    creds = tmp_path / "kafka-users.yaml"
    sasl.add_user(creds, USER, PASSWORD)
    return make_broker({
        "kafka": {"tls_cert": str(tmp_path / "server.pem"), "tls_key": str(tmp_path / "server.key"),
                  "sasl_mechanisms": ["SCRAM-SHA-512"], "sasl_credentials_file": str(creds)},
        "acl": {"rules": [f"allow sasl:{USER} all topic:*", f"allow sasl:{USER} all group:*"]},
    }, name="kafka").start()


def replicator(replicators: Replicators, source: EmbeddedBroker, server: EmbeddedBroker,
               tmp_path: Path, password: str) -> Any:
    pw = secret(tmp_path / f"pw-{len(replicators.made)}", password)
    return replicators.make({"node": NODE, "source": {"socket": source.socket}, "links": [{
        "name": "office", "target": "kafka", "address": server.kafka_bootstrap,
        "topics": ["orders"], "heartbeat_s": 0.5,
        "kafka": {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                  "sasl.username": USER, "sasl.password_file": str(pw),
                  "ssl.ca.location": str(tmp_path / "ca.pem")}}]})


def rows(sock: str, topic: str, partition: int) -> list[tuple[Any, ...]]:
    """Key, value, timestamp and headers of each record (the source header left out)."""
    with Consumer(socket=sock, auto_offset_reset="earliest", consumer_timeout_ms=1000) as c:
        c.assign([TopicPartition(topic, partition)])
        return [(r.key, r.value, r.timestamp,
                 tuple(h for h in r.headers if h[0] != "edgebus-source")) for r in c]


def test_sasl_ssl_ships_and_a_wrong_password_is_refused_on_both_sides(
        source: EmbeddedBroker, kafka_server: EmbeddedBroker, replicators: Replicators,
        tmp_path: Path) -> None:
    with Admin(socket=source.socket) as a:
        a.create_topic("orders", 2)
    with Producer(socket=source.socket) as p:
        for i in range(60):
            p.send("orders", b"order %d" % i, key=b"k%d" % (i % 5), partition=i % 2,
                   headers=[("n", b"%d" % i)])
        p.flush()

    bad = replicator(replicators, source, kafka_server, tmp_path, "not-the-password").start()
    # The replicator's own line names the refusal (librdkafka alone reports it only to its
    # error callback: the failed call says "Broker transport failure").
    # 90 s: this took 11-12 s of the default 30 at load 12-20 (librdkafka's SASL handshake
    # and its retries); CI runs at load 15-28.
    wait_for(lambda: "KafkaAuthenticationError" in bad.log(), timeout=90,
             what=f"the replicator to report "
             f"the refusal:\n{bad.log()[-2000:]}")
    line = next(ln for ln in bad.log().splitlines() if "KafkaAuthenticationError" in ln)
    assert "SASL authentication error: authentication failed (SCRAM-SHA-512)" in line, line
    assert "sasl.password_file" in line and "edgebus serve" not in line, line
    wait_for(lambda: f"SASL SCRAM-SHA-512 authentication failed: wrong password for '{USER}'"
             in kafka_server.log(), what="the server to log the refused login")
    with Admin(socket=kafka_server.socket) as a:
        assert "orders" not in a.list_topics(), "nothing reached the destination"
    bad.kill9()

    good = replicator(replicators, source, kafka_server, tmp_path, PASSWORD).start()

    def shipped() -> bool:
        return all(rows(kafka_server.socket, "orders", p) == rows(source.socket, "orders", p)
                   for p in (0, 1))

    wait_for(shipped, timeout=60, what=f"the records at the destination:\n{good.log()[-2000:]}")
    assert f"authenticated as {USER} (SCRAM-SHA-512)" in kafka_server.log()
    assert sum(len(rows(kafka_server.socket, "orders", p)) for p in (0, 1)) == 60
