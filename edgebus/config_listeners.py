"""The listener sections of the supervisor's configuration (`replica:`, `kafka:`, `http:`):
their settings, the checks across their keys once paths are resolved (TLS files that go
together, nothing open to the network unprotected), and the replica tokens file.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgebus import format as F
from edgebus.config_parse import (
    InvalidKey,
    KiB,
    MiB,
    parse_kafka_listeners,
    resolve,
    setting,
)
from edgebus.opsconfig import NODE_NAME_RE, is_loopback_listen
from edgebus.secretfiles import read_secret_map

# A replica link's shared secret: long enough that guessing it over the network is hopeless.
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class ReplicaSettings:
    # host:port where peers' replicators append their mirrors (docs/REPLICATION.md); null serves
    # none. A non-loopback address needs tls_cert and tls_key (plain TCP stays on loopback).
    listen: str | None = setting(None, "replica_listen")
    # This node's name, as its peers' mirrors name it (mirror_of "<node>/<topic>"); "" = host name.
    node: str = setting("", "node")
    # YAML mapping of peer node name -> token; a link must present its node's token.
    tokens_file: Path | None = field(default=None, metadata={"kind": "optional_path"})
    # TLS: this node's certificate chain and key (PEM). With tls_ca, peers must present a
    # certificate that CA signed, whose common name is their node name (mutual TLS).
    tls_cert: Path | None = field(default=None, metadata={"kind": "optional_path"})
    tls_key: Path | None = field(default=None, metadata={"kind": "optional_path"})
    tls_ca: Path | None = field(default=None, metadata={"kind": "optional_path"})
    # A link silent this long is closed (a peer that lost power leaves a half-open connection,
    # which would otherwise block `topics promote`); replicators' heartbeats must be shorter.
    link_idle_timeout_ms: int = setting(30_000, "duration", lo=1000, hi=3_600_000)


# The Kafka listener's default address; tests set the variable to "127.0.0.1:0" (a free port) so
# that the many supervisors they start never fight over 9092.
ENV_KAFKA_LISTENERS = "EDGEBUS_KAFKA_LISTENERS"
DEFAULT_KAFKA_LISTENERS = "127.0.0.1:9092"


def _default_kafka_listeners() -> tuple[str, ...]:
    return parse_kafka_listeners(os.environ.get(ENV_KAFKA_LISTENERS) or DEFAULT_KAFKA_LISTENERS)


@dataclass(frozen=True)
class KafkaSettings:
    """The Kafka wire-protocol listener (edgebus/server/listeners/kafka.py, docs/KAFKA.md)."""

    enabled: bool = setting(True, "bool")
    # host:port, or a list of them; a non-loopback address needs TLS or SASL.
    listeners: tuple[str, ...] = field(default_factory=_default_kafka_listeners,
                                       metadata={"kind": "kafka_listeners"})
    # The host (or host:port) clients are told to connect to in Metadata; null: the listener's.
    advertised: str | None = setting(None, "optional_str")
    # TLS: certificate chain and key (PEM); with tls_ca, clients must present a certificate
    # that CA signed (mutual TLS).
    tls_cert: Path | None = field(default=None, metadata={"kind": "optional_path"})
    tls_key: Path | None = field(default=None, metadata={"kind": "optional_path"})
    tls_ca: Path | None = field(default=None, metadata={"kind": "optional_path"})
    # SASL: the mechanisms offered (none: no authentication) and the credentials file
    # (`edgebus kafka-user add`, docs/KAFKA.md: SCRAM salted keys, never plain passwords).
    sasl_mechanisms: tuple[str, ...] = setting((), "sasl_mechanisms")
    sasl_credentials_file: Path | None = field(default=None, metadata={"kind": "optional_path"})
    # A Metadata request naming a missing topic (allow_auto_topic_creation) creates it with
    # topic_defaults, as Kafka's auto.create.topics.enable (on there too); creating still needs
    # the principal's create permission (docs/KAFKA.md, "Topic auto-creation").
    auto_create_topics: bool = setting(True, "bool")


@dataclass(frozen=True)
class HttpSettings:
    """The HTTP API and web console (docs/HTTP.md), a listener in the supervisor."""

    enabled: bool = setting(False, "bool")
    # host:port; anything but loopback needs tls_cert, tls_key and users_file (refused otherwise).
    listen: str | None = setting("127.0.0.1:8470", "replica_listen")
    # TLS: certificate chain and key (PEM).
    tls_cert: Path | None = field(default=None, metadata={"kind": "optional_path"})
    tls_key: Path | None = field(default=None, metadata={"kind": "optional_path"})
    # YAML mapping of user name -> secret (mode 0600): `Authorization: Bearer <secret>` or HTTP
    # basic with that user and secret. Without it (loopback only) no authentication is asked.
    users_file: Path | None = field(default=None, metadata={"kind": "optional_path"})
    # Bounds: connections at once, a request body, live-tail (SSE) streams at once.
    # At most 100: HTTP and replica peers share the unknown uid's limits.max_connections_per_uid
    # (128 by default), and a refusal there would be a socket-protocol frame, not HTTP.
    max_connections: int = setting(32, "int", 1, 100)
    max_body_bytes: int = setting(2 * MiB, "size", 4 * KiB, F.MAX_BATCH_BYTES * 2)
    max_streams: int = setting(8, "int", 1, 1024)


def check_replica(r: ReplicaSettings, base_dir: Path | None) -> ReplicaSettings:
    """Paths taken from the config's directory; TLS settings that make sense together."""
    paths: dict[str, Any] = {k: resolve(getattr(r, k), base_dir) for k in
                             ("tokens_file", "tls_cert", "tls_key", "tls_ca")
                             if getattr(r, k) is not None}
    r = dataclasses.replace(r, **paths)
    if (r.tls_cert is None) != (r.tls_key is None):
        raise InvalidKey("replica.tls_cert", "tls_cert and tls_key go together")
    if r.tls_ca is not None and r.tls_cert is None:
        raise InvalidKey("replica.tls_ca", "mutual TLS needs this node's tls_cert and tls_key too")
    if r.listen is not None and r.tls_cert is None and not is_loopback_listen(r.listen):
        raise InvalidKey("replica.listen",
                       f"{r.listen} is not a loopback address, and without TLS (tls_cert, tls_key) "
                       "a replica link is plain TCP: set them, or carry the link through a tunnel")
    return r


def check_http(h: HttpSettings, base_dir: Path | None) -> HttpSettings:
    """Paths taken from the config's directory; off loopback, TLS and authentication or refusal."""
    paths: dict[str, Any] = {k: resolve(getattr(h, k), base_dir) for k in
                             ("tls_cert", "tls_key", "users_file") if getattr(h, k) is not None}
    h = dataclasses.replace(h, **paths)
    if (h.tls_cert is None) != (h.tls_key is None):
        raise InvalidKey("http.tls_cert", "tls_cert and tls_key go together")
    if h.enabled and h.listen is None:
        raise InvalidKey("http.listen", "http.enabled is true but no listen address is set")
    if h.enabled and h.listen is not None and not is_loopback_listen(h.listen):
        missing = [k for k in ("tls_cert", "tls_key", "users_file") if getattr(h, k) is None]
        if missing:
            raise InvalidKey("http.listen",
                             f"{h.listen} is not a loopback address: anyone on the network could "
                             f"reach the console, so it needs TLS and authentication; set "
                             f"{', '.join('http.' + m for m in missing)} (docs/HTTP.md), or "
                             "listen on 127.0.0.1 and use an SSH tunnel")
    return h


def check_kafka(k: KafkaSettings, base_dir: Path | None) -> KafkaSettings:
    """Paths taken from the config's directory; no listener open to the network unprotected."""
    paths: dict[str, Any] = {f: resolve(getattr(k, f), base_dir) for f in
                             ("tls_cert", "tls_key", "tls_ca", "sasl_credentials_file")
                             if getattr(k, f) is not None}
    k = dataclasses.replace(k, **paths)
    if (k.tls_cert is None) != (k.tls_key is None):
        raise InvalidKey("kafka.tls_cert", "tls_cert and tls_key go together")
    if k.tls_ca is not None and k.tls_cert is None:
        raise InvalidKey("kafka.tls_ca", "client certificates need the listener's tls_cert and tls_key too")
    if k.sasl_mechanisms and k.sasl_credentials_file is None:
        raise InvalidKey("kafka.sasl_credentials_file",
                         "sasl_mechanisms are set but no credentials file names the users")
    if not k.listeners:
        raise InvalidKey("kafka.listeners", "at least one host:port (or set enabled: false)")
    if k.enabled and k.tls_cert is None and not k.sasl_mechanisms:
        for listen in k.listeners:
            if not is_loopback_listen(listen):
                raise InvalidKey(
                    "kafka.listeners",
                    f"{listen} is not a loopback address, and without TLS (tls_cert, tls_key) or "
                    "SASL (sasl_mechanisms) anyone on the network could read and write every "
                    "topic: set them, or listen on 127.0.0.1")
    return k


def load_replica_tokens(path: Path | None) -> dict[str, str]:
    """replica.tokens_file: a YAML mapping of peer node name -> token ({} without a file). The
    file holds secrets, so one that other users can read is refused (as ssh refuses a key)."""
    if path is None:
        return {}
    return read_secret_map(
        path, "replica.tokens_file", names="node name", secrets="token", min_chars=MIN_TOKEN_CHARS,
        name_ok=lambda n: isinstance(n, str) and NODE_NAME_RE.fullmatch(n) is not None)
