"""The MQTT bridge's configuration: one YAML file mapped to frozen dataclasses.

The rules are the supervisor's (edgebus/config.py): the same strict YAML reader, sizes like "64KiB"
and durations like "30s"; an unknown key, a wrong type, a value out of range or a missing required
key raises ConfigError naming the file and the key path (`ingress[2].key.topic_level`).
`bridges/mqtt/example.yaml` documents every key.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridges.mqtt import filters
from bridges.mqtt import routes as R
from bridges.mqtt import templates as T
from bridges.mqtt.config_values import PARSERS
from edgebus import paths
from edgebus.config import (  # the supervisor's parsers, so that both files obey one rule
    InvalidKey,
    as_mapping,
    describe_value,
    read_yaml_file,
)
from edgebus.config_parse import build, check_bounds
from edgebus.errors import ConfigError

KiB = 1024
SECOND = 1000
# The producer's request limit is 1 MiB; a bridge batch stays well inside it.
MAX_BATCH_BYTES = 512 * KiB
# Room for the headers of a record (topic, flags, user properties) next to the largest payload;
# a message whose record is still larger than a batch is dead-lettered (routes.py).
HEADER_ALLOWANCE = 4 * KiB
U16, U32 = 65_535, 2**32 - 1
DEFAULT_GROUP = "edgebus-mqtt-bridge"


def _m(kind: str, lo: int | None = None, hi: int | None = None,
       choices: tuple[str, ...] = ()) -> dict[str, Any]:
    """A field's metadata: how its value is parsed, and its bounds."""
    return {"kind": kind, "lo": lo, "hi": hi, "unlimited": False, "choices": choices}


@dataclass(frozen=True)
class TlsSettings:
    ca_file: Path | None = field(default=None, metadata=_m("path"))
    cert_file: Path | None = field(default=None, metadata=_m("path"))  # client certificate (with key_file)
    key_file: Path | None = field(default=None, metadata=_m("path"))
    insecure: bool = field(default=False, metadata=_m("bool"))  # skip the server's hostname check (tests only)


@dataclass(frozen=True)
class MqttSettings:
    host: str = field(default="127.0.0.1", metadata=_m("str"))
    port: int = field(default=1883, metadata=_m("int", 1, U16))
    protocol: str = field(default="5", metadata=_m("protocol"))
    client_id: str = field(default="edgebus-mqtt-bridge", metadata=_m("str"))
    keepalive_ms: int = field(default=30 * SECOND, metadata=_m("duration", SECOND, U16 * SECOND))
    # MQTT 5: how long the broker keeps the session (and queues QoS 1 messages) while the bridge
    # is away. MQTT 3.1.1 sessions persist until the broker's persistent_client_expiration.
    session_expiry_ms: int = field(default=86_400 * SECOND, metadata=_m("duration", SECOND, U32 * SECOND))
    # The in-flight window: messages received and not yet acknowledged, at most. Sent to the
    # broker as MQTT 5 Receive Maximum, and enforced by the bridge itself (it stops reading from
    # the socket when the window is full), because brokers do not always keep to it (Mosquitto
    # 2.0.11 sends more under load; MQTT 3.1.1 has no such field). Bounds memory, and the
    # duplicates a crash can cause.
    receive_maximum: int = field(default=64, metadata=_m("int", 1, U16))
    connect_timeout_ms: int = field(default=5 * SECOND, metadata=_m("duration", 100, 300 * SECOND))
    reconnect_min_ms: int = field(default=100, metadata=_m("duration", 1, 3600 * SECOND))
    reconnect_max_ms: int = field(default=30 * SECOND, metadata=_m("duration", 1, 3600 * SECOND))
    username: str | None = field(default=None, metadata=_m("str"))
    password: str | None = field(default=None, metadata=_m("str"))
    password_file: Path | None = field(default=None, metadata=_m("path"))
    tls: TlsSettings | None = field(default=None, metadata=_m("section"))
    # Where the bridge remembers the filters its broker session holds, to unsubscribe the ones
    # removed from this file (subscriptions.py). Default: $STATE_DIRECTORY (systemd's
    # StateDirectory=), else next to the status file.
    session_file: Path | None = field(default=None, metadata=_m("path"))


@dataclass(frozen=True)
class EdgebusSettings:
    socket: Path | None = field(default=None, metadata=_m("path"))  # default: $EDGEBUS_SOCKET, else the default socket
    acks: str = field(default="durable", metadata=_m("choice", choices=("written", "durable")))
    linger_ms: int = field(default=0, metadata=_m("duration", 0, 1000))
    max_batch_bytes: int = field(default=256 * KiB, metadata=_m("size", 4 * KiB, MAX_BATCH_BYTES))
    create_topics: bool = field(default=False, metadata=_m("bool"))
    partitions: int = field(default=1, metadata=_m("int", 1, 1024))  # of topics the bridge creates
    retry_backoff_ms: int = field(default=100, metadata=_m("duration", 1, 60 * SECOND))
    retry_backoff_max_ms: int = field(default=5 * SECOND, metadata=_m("duration", 1, 600 * SECOND))


@dataclass(frozen=True)
class DeadLetterSettings:
    topic: str = field(default="mqtt.dead-letter", metadata=_m("topic"))
    # Payload bytes kept in a dead letter. Default: the whole payload, as long as the record fits
    # in edgebus.max_batch_bytes (longer ones are cut, and say so in edgebus.dlq.truncated).
    max_payload_bytes: int | None = field(default=None, metadata=_m("size", 0, MAX_BATCH_BYTES - HEADER_ALLOWANCE))


@dataclass(frozen=True)
class KeySettings:
    topic_level: int | None = field(default=None, metadata=_m("int", 0, 1000))
    payload_field: str | None = field(default=None, metadata=_m("field_path"))


@dataclass(frozen=True)
class ValidateSettings:
    max_bytes: int = field(default=64 * KiB, metadata=_m("size", 0, MAX_BATCH_BYTES - HEADER_ALLOWANCE))
    json: bool = field(default=False, metadata=_m("bool"))
    required_fields: tuple[str, ...] = field(default=(), metadata=_m("field_list"))


@dataclass(frozen=True)
class IngressSettings:
    filter: str = field(metadata=_m("filter"))
    topic: str = field(metadata=_m("topic"))
    qos: int = field(default=1, metadata=_m("qos_in"))
    key: KeySettings | None = field(default=None, metadata=_m("section"))
    validate: ValidateSettings | None = field(default=None, metadata=_m("section"))
    dead_letter_topic: str | None = field(default=None, metadata=_m("topic"))


@dataclass(frozen=True)
class EgressSettings:
    topic: str = field(metadata=_m("topic"))
    mqtt_topic: T.TopicTemplate = field(metadata=_m("template"))
    group: str = field(default=DEFAULT_GROUP, metadata=_m("str"))
    qos: int = field(default=1, metadata=_m("int", 0, 2))
    retain: bool = field(default=False, metadata=_m("bool"))
    auto_offset_reset: str = field(default="earliest", metadata=_m("choice", choices=("earliest", "latest")))
    max_in_flight: int = field(default=100, metadata=_m("int", 1, U16))
    headers_as_user_properties: bool = field(default=True, metadata=_m("bool"))


@dataclass(frozen=True)
class StatusSettings:
    file: Path | None = field(default=None, metadata=_m("path"))  # default: next to the edgebus socket
    interval_ms: int = field(default=2 * SECOND, metadata=_m("duration", 100, 3600 * SECOND))


@dataclass(frozen=True)
class MetricsSettings:
    # host:port on a loopback address (no authentication); /metrics for Prometheus, /status for
    # `edgebus bridge status`. Off when not given.
    listen: str | None = field(default=None, metadata=_m("listen"))


@dataclass(frozen=True)
class BridgeConfig:
    mqtt: MqttSettings = field(default_factory=MqttSettings, metadata=_m("section"))
    edgebus: EdgebusSettings = field(default_factory=EdgebusSettings, metadata=_m("section"))
    dead_letter: DeadLetterSettings = field(default_factory=DeadLetterSettings, metadata=_m("section"))
    ingress: tuple[IngressSettings, ...] = field(default=(), metadata=_m("ingress_list"))
    egress: tuple[EgressSettings, ...] = field(default=(), metadata=_m("egress_list"))
    status: StatusSettings = field(default_factory=StatusSettings, metadata=_m("section"))
    metrics: MetricsSettings = field(default_factory=MetricsSettings, metadata=_m("section"))
    log_level: str = field(default="INFO", metadata=_m("choice", choices=("DEBUG", "INFO", "WARNING", "ERROR")))
    source: Path | None = field(default=None, compare=False)

    @property
    def status_file(self) -> Path:
        return self.status.file or default_status_file(self.mqtt.client_id)

    @property
    def session_file(self) -> Path:
        if self.mqtt.session_file is not None:
            return self.mqtt.session_file
        state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        where = Path(state) if state else self.status_file.parent
        return where / f"mqtt-session-{_safe(self.mqtt.client_id)}.json"

    def ingress_routes(self) -> list[R.IngressRoute]:
        out = []
        for r in self.ingress:
            k = r.key or KeySettings()
            v = r.validate or ValidateSettings()
            out.append(R.IngressRoute(
                filter=r.filter, topic=r.topic,
                dead_letter_topic=r.dead_letter_topic or self.dead_letter.topic, qos=r.qos,
                key=R.KeySpec(k.topic_level, k.payload_field),
                validate=R.Validation(v.max_bytes, v.json, v.required_fields),
                max_dead_letter_payload=self.dead_letter.max_payload_bytes,
                max_record_bytes=self.edgebus.max_batch_bytes))
        return out

    def topics(self) -> list[str]:
        """Every edgebus topic the bridge writes to or reads from."""
        names = [self.dead_letter.topic]
        names += [r.topic for r in self.ingress] + [r.dead_letter_topic or "" for r in self.ingress]
        names += [r.topic for r in self.egress]
        return sorted({n for n in names if n})


def _safe(client_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in client_id)


def default_status_file(client_id: str) -> Path:
    """In the bridge's own runtime directory when systemd gave it one (RuntimeDirectory= sets
    $RUNTIME_DIRECTORY; the supervisor's socket directory is not writable by the bridge's user),
    else next to the edgebus socket."""
    safe = _safe(client_id)
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    where = Path(runtime) if runtime else paths.default_socket_path().parent
    return where / f"mqtt-bridge-{safe}.status.json"


# --- parsing (the value parsers of each kind: config_values.py) ----------------------------------


_SECTIONS = {
    "mqtt": MqttSettings, "edgebus": EdgebusSettings, "dead_letter": DeadLetterSettings,
    "tls": TlsSettings, "key": KeySettings, "validate": ValidateSettings,
    "status": StatusSettings, "metrics": MetricsSettings,
}


def _build(cls: type[Any], data: Any, where: str) -> Any:
    return build(cls, as_mapping(data, where), where, parse=_value)


def _value(f: dataclasses.Field[Any], raw: Any, where: str) -> Any:
    kind = f.metadata["kind"]
    if kind == "section":
        return _build(_SECTIONS[f.name], raw, where)
    if kind in ("ingress_list", "egress_list"):
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise InvalidKey(where, f"expected a list of routes, got {describe_value(raw)}")
        cls = IngressSettings if kind == "ingress_list" else EgressSettings
        return tuple(_build(cls, item, f"{where}[{i}]") for i, item in enumerate(raw))
    if raw is None and f.default is None:
        return None
    try:
        if kind == "choice":
            text = raw.upper() if isinstance(raw, str) and f.name == "log_level" else raw
            if text not in f.metadata["choices"]:
                raise ValueError(f"expected one of {', '.join(f.metadata['choices'])}, "
                                 f"got {describe_value(raw)}")
            return text
        value = PARSERS[kind](raw)
        if isinstance(value, int) and not isinstance(value, bool):
            check_bounds(f, value)
        return value
    except ValueError as e:
        raise InvalidKey(where, str(e)) from None


def _cross_check(c: BridgeConfig) -> None:
    """Rules between keys; each error names the key to change."""
    if not c.ingress and not c.egress:
        raise InvalidKey("(top level)", "no routes: give at least one 'ingress' or 'egress' route")
    m = c.mqtt
    if m.password is not None and m.password_file is not None:
        raise InvalidKey("mqtt.password_file", "give either 'password' or 'password_file', not both")
    if (m.password is not None or m.password_file is not None) and m.username is None:
        raise InvalidKey("mqtt.username", "a password needs a username")
    if m.reconnect_min_ms > m.reconnect_max_ms:
        raise InvalidKey("mqtt.reconnect_min_ms", "must not exceed mqtt.reconnect_max_ms")
    if m.tls is not None and (m.tls.cert_file is None) != (m.tls.key_file is None):
        raise InvalidKey("mqtt.tls.key_file", "a client certificate needs both cert_file and key_file")
    if len(m.client_id.encode()) > 128:
        raise InvalidKey("mqtt.client_id", "at most 128 bytes (brokers may refuse longer ones)")
    e = c.edgebus
    if e.retry_backoff_ms > e.retry_backoff_max_ms:
        raise InvalidKey("edgebus.retry_backoff_ms", "must not exceed edgebus.retry_backoff_max_ms")
    seen: dict[str, int] = {}
    for i, r in enumerate(c.ingress):
        where = f"ingress[{i}]"
        if r.filter in seen:
            raise InvalidKey(f"{where}.filter",
                           f"filter {r.filter!r} is routed twice (also ingress[{seen[r.filter]}])")
        seen[r.filter] = i
        if r.key is not None:
            if r.key.topic_level is not None and r.key.payload_field is not None:
                raise InvalidKey(f"{where}.key", "give either topic_level or payload_field, not both")
            if r.key.topic_level is not None:
                try:
                    R.check_key_level(r.filter, r.key.topic_level)
                except ValueError as err:
                    raise InvalidKey(f"{where}.key.topic_level", str(err)) from None
        v = r.validate or ValidateSettings()
        if v.max_bytes + HEADER_ALLOWANCE > e.max_batch_bytes:
            raise InvalidKey(f"{where}.validate.max_bytes",
                           f"{v.max_bytes} bytes plus {HEADER_ALLOWANCE} for headers exceed "
                           f"edgebus.max_batch_bytes={e.max_batch_bytes}")
    dl_max = c.dead_letter.max_payload_bytes
    if dl_max is not None and dl_max + HEADER_ALLOWANCE > e.max_batch_bytes:
        raise InvalidKey("dead_letter.max_payload_bytes",
                       f"plus {HEADER_ALLOWANCE} bytes for headers it exceeds "
                       f"edgebus.max_batch_bytes={e.max_batch_bytes}")
    if m.protocol != "5" and any(r.filter.startswith("$share/") for r in c.ingress):
        raise InvalidKey("mqtt.protocol", "shared subscriptions ($share/...) need MQTT 5")
    _check_loops(c)


def _check_loops(c: BridgeConfig) -> None:
    """An ingress filter matching an egress route's topics would take the bridge's own publishes
    back in (a loop through edgebus). MQTT 5's noLocal stops the broker from sending them, but
    not on shared subscriptions (MQTT 5 3.8.3.1) and not at all with MQTT 3.1.1: refused there."""
    for j, eg in enumerate(c.egress):
        out_filter = eg.mqtt_topic.as_filter()
        for i, r in enumerate(c.ingress):
            if not filters.filters_overlap(r.filter, out_filter):
                continue
            if c.mqtt.protocol != "5":
                why = "MQTT 3.1.1 has no noLocal"
            elif r.filter.startswith("$share/"):
                why = "noLocal is not allowed on a shared subscription"
            else:
                continue
            raise InvalidKey(f"ingress[{i}].filter",
                           f"{r.filter!r} matches topics egress[{j}] publishes to "
                           f"({eg.mqtt_topic.text!r}), and {why}: the bridge would take its own "
                           "publishes back in; use filters that do not overlap (or MQTT 5 "
                           "without $share)")


def config_from_mapping(data: Any, source: str | Path | None = None) -> BridgeConfig:
    """A BridgeConfig from a parsed YAML document; relative paths are taken from the directory of
    `source` when it is given."""
    src = Path(source) if source is not None else None
    try:
        c: BridgeConfig = _build(BridgeConfig, data, "")
        _cross_check(c)
    except InvalidKey as e:
        prefix = f"{src}: " if src is not None else ""
        err = ConfigError(f"{prefix}{e.key}: {e.message}")
        err.key, err.file = e.key, src  # type: ignore[attr-defined]
        raise err from None
    if src is not None:
        c = _resolve_paths(c, src.parent)
    return dataclasses.replace(c, source=src)


def _resolve_paths(c: BridgeConfig, base: Path) -> BridgeConfig:
    def fix(p: Path | None) -> Path | None:
        return base / p if p is not None and not p.is_absolute() else p

    m = c.mqtt
    tls = m.tls
    if tls is not None:
        tls = dataclasses.replace(tls, ca_file=fix(tls.ca_file), cert_file=fix(tls.cert_file),
                                  key_file=fix(tls.key_file))
    return dataclasses.replace(
        c,
        mqtt=dataclasses.replace(m, tls=tls, password_file=fix(m.password_file),
                                 session_file=fix(m.session_file)),
        edgebus=dataclasses.replace(c.edgebus, socket=fix(c.edgebus.socket)),
        status=dataclasses.replace(c.status, file=fix(c.status.file)),
    )


def load_config(path: str | os.PathLike[str]) -> BridgeConfig:
    p = Path(path).expanduser()
    return config_from_mapping(read_yaml_file(p), source=p)


def read_password(m: MqttSettings) -> str | None:
    """The MQTT password: inline, or the first line of password_file (kept out of the config)."""
    if m.password_file is None:
        return m.password
    try:
        with open(m.password_file, encoding="utf-8") as fh:
            return fh.readline().rstrip("\r\n")
    except OSError as e:
        raise ConfigError(f"mqtt.password_file: cannot read {m.password_file}: {e.strerror}") from None
