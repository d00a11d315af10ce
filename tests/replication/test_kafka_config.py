"""The `kafka` link kind and `direction: down` in the replicator's config: what Kafka users
write is taken (passed through to librdkafka), and every mistake is a ConfigError naming the
key. No broker needed (librdkafka checks settings without connecting)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgebus.errors import ConfigError

from .conftest import secret

pytest.importorskip("confluent_kafka", reason="confluent-kafka is not installed: pip install -e '.[test]'")
pytestmark = pytest.mark.unit


def doc(kafka: dict[str, Any] | None = None, address: str = "127.0.0.1:9092", **link: Any
        ) -> dict[str, Any]:
    return {"node": "gw-7", "links": [{"name": "office", "target": "kafka", "address": address,
                                       "kafka": kafka or {}, "topics": ["sensors.*"], **link}]}


def test_a_sasl_ssl_link_as_kafka_users_write_it(tmp_path: Path, monkeypatch):
    import trustme

    from bridges.replicator.config import config_from_mapping

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    secret(tmp_path / "kafka-password", "s3cret-of-gw-7\n")
    cfg = config_from_mapping(doc({
        "topic": "edge.{node}.{topic}", "replication_factor": 3,
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "gw-7", "sasl.password_file": "${CREDENTIALS_DIRECTORY}/kafka-password",
        "ssl.ca.location": str(tmp_path / "ca.pem"), "compression.type": "zstd",
        "linger.ms": 20},
        address="kafka-1.example:9093, kafka-2.example:9093",
        topics=["sensors.*", {"pattern": "commands", "direction": "down",
                              "remote": "office.commands.gw-7"}]))
    link = cfg.links[0]
    assert link.kafka is not None
    assert link.kafka.client["sasl.password"] == "s3cret-of-gw-7"
    assert (link.kafka.client["compression.type"], link.kafka.client["linger.ms"]) == ("zstd", "20")
    assert link.kafka.client["bootstrap.servers"] == "kafka-1.example:9093,kafka-2.example:9093"
    assert link.kafka.destination("sensors.t", "gw-7") == "edge.gw-7.sensors.t"
    assert "s3cret" not in repr(link)  # the password stays out of logs and tracebacks
    # A topic brought down is never shipped back up, even if an up pattern matches it.
    assert link.rule_for("sensors.t") is not None
    assert [r.pattern for r in link.pulls] == ["commands"]
    assert link.rule_for("commands") is None


@pytest.mark.parametrize(("kafka", "address", "message"), [
    ({"sasl.password": "x"}, None, r"sasl\.password: not a setting .*sasl\.password_file"),
    ({"enable.idempotence": False}, None, "enable.idempotence: not a setting"),
    ({"security.protocol": "TLS"}, None, "security.protocol: 'TLS' is not one of"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI", "sasl.username": "u"}, None,
     "sasl.mechanism: with SASL_SSL, one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u"}, None,
     "sasl.username and sasl.password_file are needed"),
    ({"sasl.mechanism": "PLAIN"}, None, "set security.protocol to SASL_SSL"),
    ({}, "kafka.example:9092", "PLAINTEXT to kafka.example:9092, not a loopback address"),
    ({"ssl.ca.location": "/nonexistent/ca.pem", "security.protocol": "SSL"}, None,
     "ssl.ca.location: /nonexistent/ca.pem is not a readable file"),
    ({"topic": "edge.{node}"}, None, "topic: expected a name template containing {topic}"),
    ({"topic": "{topic}.{site}"}, None, "only {topic} and {node} may be used"),
    ({"replication_factor": 0}, None, "replication_factor: expected 1..16"),
    ({"compression.type": "rar"}, None, "librdkafka refuses these settings"),
    ({}, "127.0.0.1", "address: expected host:port"),
])
def test_kafka_settings_are_checked(kafka, address, message):
    from bridges.replicator.config import config_from_mapping

    with pytest.raises(ConfigError, match=message):
        config_from_mapping(doc(kafka, address or "127.0.0.1:9092"))


def test_a_password_file_others_can_read_is_refused(tmp_path: Path):
    from bridges.replicator.config import config_from_mapping

    pw = tmp_path / "pw"
    pw.write_text("x")
    pw.chmod(0o644)
    with pytest.raises(ConfigError, match=r"sasl\.password_file: .* readable by its group or others"):
        config_from_mapping(doc({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                                 "sasl.username": "u", "sasl.password_file": str(pw)}))


@pytest.mark.parametrize(("topics", "message"), [
    ([{"pattern": "cmd.*", "direction": "down"}], "a topic brought down is named exactly"),
    ([{"pattern": "cmd", "direction": "sideways"}], "direction: expected up or down"),
    ([{"pattern": "cmd", "remote": "x"}], "remote: only for direction: down"),
    ([{"pattern": "cmd", "direction": "down"}, {"pattern": "cmd", "direction": "down",
                                                "remote": "y"}], "into the same local topic"),
])
def test_direction_rules_are_checked(topics, message):
    from bridges.replicator.config import config_from_mapping

    with pytest.raises(ConfigError, match=message):
        config_from_mapping(doc(topics=topics))


def test_peer_links_need_local_replica_for_a_down_direction_and_refuse_kafka_keys(
        tmp_path: Path):
    from bridges.replicator.config import config_from_mapping

    tf = secret(tmp_path / "tok", "t0ken-of-the-source-node-1234")
    peer = {"name": "b", "target": "peer", "address": "127.0.0.1:9", "token_file": str(tf),
            "topics": [{"pattern": "cmd", "direction": "down"}]}
    with pytest.raises(ConfigError, match="a peer link with direction: down rules needs "
                       "local_replica"):
        config_from_mapping({"node": "gw", "links": [peer]})
    with pytest.raises(ConfigError, match=r"local_replica\.address: 10\.0\.0\.1:9 is not a "):
        config_from_mapping({"node": "gw", "links": [
            {**peer, "local_replica": {"address": "10.0.0.1:9", "token_file": str(tf)}}]})
    ok = config_from_mapping({"node": "gw", "links": [
        {**peer, "local_replica": {"address": "127.0.0.1:10", "token_file": str(tf)}}]})
    assert ok.links[0].local is not None and ok.links[0].local.address == "127.0.0.1:10"
    with pytest.raises(ConfigError, match="kafka: only for target: kafka"):
        config_from_mapping({"node": "gw", "links": [{**peer, "topics": ["a"], "kafka": {}}]})
    with pytest.raises(ConfigError, match="token_file: a Kafka link sets its security under"):
        config_from_mapping(doc(token_file=str(tf)))
    with pytest.raises(ConfigError, match="durable: a Kafka link always waits for acks=all"):
        config_from_mapping(doc(durable=False))


def test_replicate_check_validates_a_kafka_link(tmp_path: Path):
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(doc({"topic": "edge.{topic}"})))
    cmd = [sys.executable, "-m", "edgebus.cli.main", "replicate", "--config", str(cfg), "--check"]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "office -> kafka 127.0.0.1:9092" in ok.stdout
    cfg.write_text(yaml.safe_dump(doc({"security.protocol": "SASL_SSL"})))
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "sasl.mechanism" in bad.stderr
