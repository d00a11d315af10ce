"""The `kafka:` section of a link whose target is a Kafka-protocol cluster (targets/kafka.py).

    - name: office
      target: kafka
      address: kafka-1.example:9093,kafka-2.example:9093   # bootstrap servers
      kafka:
        topic: "edge.{node}.{topic}"      # the destination topic of a local one ({topic})
        replication_factor: 3             # of topics the replicator creates (default: broker's)
        security.protocol: SASL_SSL       # as librdkafka names them, passed through
        sasl.mechanism: SCRAM-SHA-512     # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
        sasl.username: gw-7
        compression.type: zstd            # also linger.ms, batch.size
        sasl.password_file: ${CREDENTIALS_DIRECTORY}/kafka-password   # mode 0600
        ssl.ca.location: /etc/edgebus/kafka-ca.pem
        ssl.certificate.location: /etc/edgebus/gw-7.pem   # TLS client authentication
        ssl.key.location: /etc/edgebus/gw-7.key
      topics: ["sensors.*", {pattern: commands, direction: down, remote: office.commands.gw-7}]

Passwords never sit in the config file itself: `sasl.password_file` names a file (as
`token_file` does for a peer), which systemd's LoadCredential= can hand over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgebus.errors import ConfigError
from edgebus.opsconfig import is_host_port, is_loopback_listen
from edgebus.secretfiles import config_path, read_secret

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# librdkafka properties taken as they are (strings); the rest of its ~150 are the replicator's
# business (idempotence, acks, ordering: targets/kafka.py) and are refused, so that no setting
# in a config file can quietly weaken the no-gap, no-duplicate promise.
PASSTHROUGH = ("security.protocol", "sasl.mechanism", "sasl.username", "ssl.ca.location",
               "ssl.certificate.location", "ssl.key.location",
               "ssl.endpoint.identification.algorithm", "client.id",
               # Throughput only: compression of the produce requests, and how long they wait.
               "compression.type", "linger.ms", "batch.size")
FILES = ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location")
OWN = ("topic", "replication_factor", "sasl.password_file", "ssl.key.password_file")
MAX_TOPIC_NAME = 249  # Kafka's own limit


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str  # host:port[,host:port...]
    topic: str = "{topic}"  # destination name template: {topic}, {node}
    replication_factor: int = -1  # -1: the broker's default.replication.factor
    # librdkafka properties (security), secrets read from their files included. Not shown.
    client: dict[str, str] = field(default_factory=dict, repr=False)

    def destination(self, topic: str, node: str) -> str:
        return self.topic.format(topic=topic, node=node)


def parse_bootstrap(address: str, where: str) -> list[str]:
    servers = [s.strip() for s in address.split(",") if s.strip()]
    if not servers:
        raise ConfigError(f"{where}address: expected host:port[,host:port...]")
    for s in servers:
        if not is_host_port(s):
            raise ConfigError(f"{where}address: expected host:port, got {s!r}")
    return servers


def kafka_config(raw: Any, address: str, where: str, base: Path | None) -> KafkaConfig:
    where += "kafka."
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{where[:-1]}: expected a mapping")
    servers = parse_bootstrap(address, where[:-len("kafka.")])
    for k in raw:
        if k not in PASSTHROUGH and k not in OWN:
            hint = (" (put it in a file named by sasl.password_file, mode 0600)"
                    if k in ("sasl.password", "ssl.key.password") else "")
            raise ConfigError(f"{where}{k}: not a setting of a Kafka link{hint} (known: "
                              f"{', '.join(sorted(PASSTHROUGH + OWN))})")
    client: dict[str, str] = {}
    for k in PASSTHROUGH:
        if k in raw:
            v = raw[k]
            if isinstance(v, int) and not isinstance(v, bool) and k in ("linger.ms", "batch.size"):
                v = str(v)
            if not isinstance(v, str) or not v.strip():
                raise ConfigError(f"{where}{k}: expected a non-empty string, got {v!r}")
            client[k] = str(config_path(v, base)) if k in FILES else v.strip()
    for k in FILES:
        if k in client and not Path(client[k]).is_file():
            raise ConfigError(f"{where}{k}: {client[k]} is not a readable file")
    proto = client.setdefault("security.protocol", "PLAINTEXT").upper()
    if proto not in SECURITY_PROTOCOLS:
        raise ConfigError(f"{where}security.protocol: {proto!r} is not one of "
                          f"{', '.join(SECURITY_PROTOCOLS)}")
    client["security.protocol"] = proto
    if proto.startswith("SASL"):
        mech = client.get("sasl.mechanism", "").upper()
        if mech not in SASL_MECHANISMS:
            raise ConfigError(f"{where}sasl.mechanism: with {proto}, one of "
                              f"{', '.join(SASL_MECHANISMS)} (got {mech or 'none'!r})")
        client["sasl.mechanism"] = mech
        if "sasl.username" not in client or "sasl.password_file" not in raw:
            raise ConfigError(f"{where}sasl.username: with {proto}, sasl.username and "
                              "sasl.password_file are needed")
        client["sasl.password"] = read_secret(
            config_path(str(raw["sasl.password_file"]), base), where + "sasl.password_file")
    elif "sasl.mechanism" in client or "sasl.username" in client:
        raise ConfigError(f"{where}sasl.mechanism: set security.protocol to SASL_SSL (or "
                          "SASL_PLAINTEXT on loopback) to use SASL")
    if "ssl.key.password_file" in raw:
        client["ssl.key.password"] = read_secret(
            config_path(str(raw["ssl.key.password_file"]), base), where + "ssl.key.password_file")
    if ("ssl.certificate.location" in client) != ("ssl.key.location" in client):
        raise ConfigError(f"{where}ssl.certificate.location: the certificate and "
                          "ssl.key.location go together")
    if not proto.endswith("SSL"):
        far = [s for s in servers if not is_loopback_listen(s)]
        if far:
            raise ConfigError(f"{where}security.protocol: {proto} to {far[0]}, not a loopback "
                              "address: records (and a SASL password) would cross the network "
                              "in clear; use SSL or SASL_SSL, or a tunnel to a loopback address")
    topic = raw.get("topic", "{topic}")
    if not isinstance(topic, str) or "{topic}" not in topic:
        raise ConfigError(f"{where}topic: expected a name template containing {{topic}}, "
                          f"got {topic!r}")
    try:
        topic.format(topic="t", node="n")
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"{where}topic: {topic!r}: only {{topic}} and {{node}} may be "
                          f"used ({e})") from None
    rf = raw.get("replication_factor", -1)
    if isinstance(rf, bool) or not isinstance(rf, int) or not (rf == -1 or 1 <= rf <= 16):
        raise ConfigError(f"{where}replication_factor: expected 1..16 (or -1: the broker's "
                          f"default), got {rf!r}")
    client["bootstrap.servers"] = ",".join(servers)
    cfg = KafkaConfig(",".join(servers), topic, rf, client)
    _check_with_librdkafka(cfg, where)
    return cfg


def _check_with_librdkafka(cfg: KafkaConfig, where: str) -> None:
    """librdkafka checks every property when a client is made (no connection yet): so --check
    reports what the library would refuse at start."""
    try:
        from confluent_kafka import KafkaException, Producer
    except ImportError:
        raise ConfigError(f"{where[:-1]}: the kafka target needs confluent-kafka: "
                          "pip install 'edgebus[kafka]'") from None
    try:
        Producer(dict(cfg.client))
    except KafkaException as e:
        raise ConfigError(f"{where[:-1]}: librdkafka refuses these settings: "
                          f"{e.args[0].str() if e.args else e}") from None
