"""The supervisor's configuration: one YAML file mapped to frozen dataclasses.

Every key has a default, so no file (or an empty one) is a valid configuration. Each value is
checked against its field's kind and bounds; an unknown key, a wrong type or a value out of range
raises ConfigError naming the file and the full key path (`topics[1].partitions`), with a
suggestion for a misspelt key. `examples/edgebus.yaml` documents every key with its default.

Sizes are integers (bytes) or strings such as "64MiB"; durations are integers (milliseconds) or
strings such as "7d", "12h", "30s", "500ms". Only binary size units are accepted: "MB" could mean
either 10**6 or 2**20 bytes, so it is refused rather than guessed.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgebus import format as F
from edgebus import paths
from edgebus.acl.settings import AclKeyError, AclSettings, parse_section
from edgebus.errors import ConfigError, InvalidTopicError
from edgebus.log.topic_config import DISK_FULL_REJECT, MAX_SEGMENT_BYTES, validate_topic_name
from edgebus.opsconfig import (
    NODE_NAME_RE,
    Threshold,
    is_loopback_listen,
    parse_cleanup_policy,
    parse_disk_policy,
    parse_listen,
    parse_replica_listen,
    parse_threshold,
)
from edgebus.secretfiles import check_private

# An operator's file is small; a bound keeps a wrong path (a log file, a device) from being slurped.
MAX_CONFIG_BYTES = 1024 * 1024
# sun_path is 108 bytes on Linux, one of them the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4
SECOND, MINUTE, HOUR, DAY = 1000, 60_000, 3_600_000, 86_400_000
I32_MAX, I64_MAX = 2**31 - 1, 2**63 - 1

_SIZE_UNITS = {"b": 1, "kib": KiB, "mib": MiB, "gib": GiB, "tib": TiB}
_DURATION_UNITS = {"ms": 1, "s": SECOND, "m": MINUTE, "h": HOUR, "d": DAY, "w": 7 * DAY}
_NUMBER_UNIT = re.compile(r"\s*(-?\d+)\s*([A-Za-z]*)\s*")


# --- value parsers: each raises ValueError with a message that does not name the key -------------


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _plain_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def parse_size(value: int | str) -> int:
    """Bytes from an integer or a string like "64MiB", "512 KiB", "4096"."""
    if (n := _plain_int(value)) is not None:
        return n
    m = _NUMBER_UNIT.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(
            f"expected a size (bytes, or a string like '64MiB'), got {_describe(value)}"
        )
    number, unit = int(m.group(1)), m.group(2)
    if not unit:
        return number
    if unit.lower() not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit {unit!r} in {value!r} (use B, KiB, MiB, GiB or TiB)")
    return number * _SIZE_UNITS[unit.lower()]


def parse_duration(value: int | str) -> int:
    """Milliseconds from an integer or a string like "7d", "12h", "30m", "30s", "500ms"."""
    if (n := _plain_int(value)) is not None:
        return n
    m = _NUMBER_UNIT.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(
            f"expected a duration (milliseconds, or a string like '30s'), got {_describe(value)}"
        )
    number, unit = int(m.group(1)), m.group(2)
    if not unit:
        return number
    if unit not in _DURATION_UNITS:
        raise ValueError(f"unknown duration unit {unit!r} in {value!r} (use ms, s, m, h, d or w)")
    return number * _DURATION_UNITS[unit]


class _OctalInt(int):
    """An integer written in YAML with a leading zero (0660): the only integers taken as modes."""


def _parse_mode(value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"(0o?)?[0-7]{1,4}", value.strip()):
        mode = int(value.strip().removeprefix("0o"), 8)
    elif isinstance(value, _OctalInt) or (_plain_int(value) is not None and 0 <= value <= 7):
        mode = int(value)
    elif _plain_int(value) is not None:
        raise ValueError(f"write the mode in octal with a leading zero (like 0660), got {value}")
    else:
        raise ValueError(f"expected an octal file mode like 0660, got {_describe(value)}")
    if mode > 0o777:
        raise ValueError(f"expected a file mode of at most 0777, got {oct(mode)}")
    return mode


def _parse_level(value: Any) -> str:
    if isinstance(value, str) and value.strip().upper() in LOG_LEVELS:
        return value.strip().upper()
    raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {_describe(value)}")


def _parse_int(value: Any) -> int:
    if (n := _plain_int(value)) is None:
        raise ValueError(f"expected integer, got {_describe(value)}")
    return n


def _parse_path(value: Any) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a path, got {_describe(value)}")
    return Path(value).expanduser()


def _parse_optional_path(value: Any) -> Path | None:
    return None if value is None else _parse_path(value)


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {_describe(value)}")


def _parse_kafka_listeners(value: Any) -> tuple[str, ...]:
    """One host:port or a list of them (any address: the kafka section refuses a non-loopback
    one without TLS or SASL)."""
    items = value if isinstance(value, list) else [value]
    out = []
    for v in items:
        listen = parse_replica_listen(v)
        if listen is None:
            raise ValueError(f"expected host:port such as '127.0.0.1:9092', got {_describe(v)}")
        out.append(listen)
    return tuple(out)


def _parse_sasl_mechanisms(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for v in items:
        if not isinstance(v, str) or v.strip().upper() not in SASL_MECHANISMS:
            raise ValueError(f"expected a list of {', '.join(SASL_MECHANISMS)}, got {_describe(v)}")
        out.append(v.strip().upper())
    return tuple(out)


def _parse_optional_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise ValueError(f"expected a string, got {_describe(value)}")


def _parse_node(value: Any) -> str:
    if isinstance(value, str) and (value == "" or NODE_NAME_RE.fullmatch(value)):
        return value
    raise ValueError(f"expected a node name of 1-64 letters, digits, '.', '_' or '-', got {_describe(value)}")


_PARSERS = {
    "int": _parse_int, "size": parse_size, "duration": parse_duration,
    "path": _parse_path, "level": _parse_level, "mode": _parse_mode,
    "threshold": lambda v: parse_threshold(v, parse_size), "listen": parse_listen,
    "disk_policy": parse_disk_policy, "replica_listen": parse_replica_listen,
    "optional_path": _parse_optional_path, "node": _parse_node, "bool": _parse_bool,
    "cleanup_policy": parse_cleanup_policy, "kafka_listeners": _parse_kafka_listeners,
    "sasl_mechanisms": _parse_sasl_mechanisms, "optional_str": _parse_optional_str,
}


def _setting(default: Any, kind: str, lo: int | None = None, hi: int | None = None,
             unlimited: bool = False) -> Any:
    """A dataclass field with its kind and bounds; `unlimited` also admits -1 ("no limit")."""
    meta = {"kind": kind, "lo": lo, "hi": hi, "unlimited": unlimited}
    return field(default=default, metadata=meta)


def _check_bounds(f: dataclasses.Field[Any], n: int) -> None:
    lo, hi, unlimited = f.metadata["lo"], f.metadata["hi"], f.metadata["unlimited"]
    if unlimited and n == -1:
        return
    no_limit = " (or -1 for no limit)" if unlimited else ""
    if lo is not None and n < lo:
        raise ValueError(f"must be at least {lo}{no_limit}, got {n}")
    if hi is not None and n > hi:
        raise ValueError(f"must be at most {hi}, got {n}")


# --- the dataclasses -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LogSettings:
    """Background work of the supervisor on the log."""

    # fsync of written data in the background, so the recovery checkpoint advances without acks.
    flush_interval_ms: int = _setting(1000, "duration", 1, I32_MAX)
    checkpoint_interval_ms: int = _setting(5000, "duration", 1, I32_MAX)
    retention_check_interval_ms: int = _setting(60_000, "duration", 1, I32_MAX)
    # The log cleaner of compacted topics (edgebus/server/cleaning.py): how often it looks for
    # work, and the bytes per second it may read and write together (an SD card wears out).
    cleaner_interval_ms: int = _setting(15_000, "duration", 1, I32_MAX)
    cleaner_io_bytes_per_s: int = _setting(4 * MiB, "size", 4096, I64_MAX)


@dataclass(frozen=True)
class Limits:
    max_connections: int = _setting(256, "int", 1, 65_536)
    # Bytes queued for one connection before the supervisor stops reading its requests.
    max_output_buffer_bytes: int = _setting(F.MAX_OUTPUT_BUFFER, "size", 1)
    # The longest a fetch may wait for data (the wire field is an i32).
    max_fetch_wait_ms: int = _setting(30_000, "duration", 0, I32_MAX)
    # Request bytes read from one connection and not yet handled; reading pauses above this. At
    # least one largest frame plus a read, so that a whole frame always fits.
    max_input_buffer_bytes: int = _setting(2 * F.MAX_FRAME_BYTES, "size", F.MAX_FRAME_BYTES + MiB)
    # (Fields below were added later: new ones go last, as Limits(...) may be built positionally.)
    # Connections of one user (SO_PEERCRED uid) at once: half the slots by default, so that one
    # user's clients (or a runaway loop of them) cannot take every slot from the others.
    max_connections_per_uid: int = _setting(128, "int", 1, 65_536)
    # Bytes queued for all connections together: at or above it, fetches are refused
    # (ServerBusyError) until clients read; four stuck 64MiB connections reach the default.
    max_output_total_bytes: int = _setting(F.MAX_OUTPUT_TOTAL, "size", F.MAX_BATCH_BYTES)


@dataclass(frozen=True)
class TopicSettings:
    """Partitions and storage settings of a topic: the fields of the storage's TopicConfig
    (edgebus/log/topic_config.py) with the same defaults, and bounds within its bounds."""

    partitions: int = _setting(1, "int", 1, F.MAX_PARTITIONS)
    retention_ms: int = _setting(7 * DAY, "duration", 1, I64_MAX, unlimited=True)
    retention_bytes: int = _setting(-1, "size", 1, I64_MAX, unlimited=True)
    segment_bytes: int = _setting(64 * MiB, "size", F.BATCH_HEADER_SIZE, MAX_SEGMENT_BYTES)
    segment_ms: int = _setting(7 * DAY, "duration", 1, I64_MAX)
    max_message_bytes: int = _setting(1 * MiB, "size", F.BATCH_HEADER_SIZE, F.MAX_BATCH_BYTES)
    index_interval_bytes: int = _setting(4096, "size", 1, I32_MAX)
    # Below the disk low watermark: "reject" appends (DiskFullError) or "drop-oldest" segments.
    on_disk_full: str = _setting(DISK_FULL_REJECT, "disk_policy")
    # "delete" (retention), "compact" (the log cleaner keeps each key's latest record) or both.
    cleanup_policy: str = _setting("delete", "cleanup_policy")
    delete_retention_ms: int = _setting(DAY, "duration", 0, I64_MAX)
    min_compaction_lag_ms: int = _setting(0, "duration", 0, I64_MAX)

    def entries(self) -> dict[str, str]:
        """Every setting, partitions included, as name -> decimal string (the form of
        ConfigEntry values and of TopicConfig.from_entries)."""
        return {k: str(v) for k, v in dataclasses.asdict(self).items()}

    def config_entries(self) -> dict[str, str]:
        """The storage settings only (partitions travel separately in CreateTopic)."""
        return {k: v for k, v in self.entries().items() if k != "partitions"}


TOPIC_CONFIG_KEYS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(TopicSettings) if f.name != "partitions"
)


@dataclass(frozen=True)
class TopicSpec:
    """A topic declared under `topics:`: created at start when missing, and given these settings
    at start and on SIGHUP when it exists (edgebus/server/reload.py). `settings` are the
    topic_defaults overlaid with the keys given for this topic."""

    name: str
    settings: TopicSettings = field(default_factory=TopicSettings)

    @property
    def partitions(self) -> int:
        return self.settings.partitions

    def entries(self) -> dict[str, str]:
        """This topic's resolved settings (topic_defaults overlaid), partitions included."""
        return self.settings.entries()


@dataclass(frozen=True)
class DiskSettings:
    """Free-space watermarks of the data directory's filesystem (edgebus/server/disk.py)."""

    # Below this much free space, each topic's on_disk_full policy applies...
    # (Threshold is a frozen dataclass, so one shared default instance is safe.)
    low_watermark: Threshold = _setting(Threshold(percent=5.0), "threshold")  # noqa: RUF009
    # ...until at least this much is free again (hysteresis, so the state does not flap).
    high_watermark: Threshold = _setting(Threshold(percent=10.0), "threshold")  # noqa: RUF009
    # How often free space is checked while idle; appends also check once their bytes could
    # have crossed the low watermark since the last check.
    check_interval_ms: int = _setting(5000, "duration", 100, I32_MAX)

    def __post_init__(self) -> None:
        lo, hi = self.low_watermark, self.high_watermark
        same_unit = (lo.percent is None) == (hi.percent is None)
        if same_unit and (lo.bytes or lo.percent or 0) > (hi.bytes or hi.percent or 0):
            raise InvalidKey("disk.high_watermark",
                           f"must not be below low_watermark ({hi} < {lo})")


@dataclass(frozen=True)
class MetricsSettings:
    # host:port of the Prometheus text endpoint, loopback only; null serves none.
    listen: str | None = _setting(None, "listen")


# A replica link's shared secret: long enough that guessing it over the network is hopeless.
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class ReplicaSettings:
    # host:port where peers' replicators append their mirrors (docs/REPLICATION.md); null serves
    # none. A non-loopback address needs tls_cert and tls_key (plain TCP stays on loopback).
    listen: str | None = _setting(None, "replica_listen")
    # This node's name, as its peers' mirrors name it (mirror_of "<node>/<topic>"); "" = host name.
    node: str = _setting("", "node")
    # YAML mapping of peer node name -> token; a link must present its node's token.
    tokens_file: Path | None = field(default=None, metadata={"kind": "optional_path"})
    # TLS: this node's certificate chain and key (PEM). With tls_ca, peers must present a
    # certificate that CA signed, whose common name is their node name (mutual TLS).
    tls_cert: Path | None = field(default=None, metadata={"kind": "optional_path"})
    tls_key: Path | None = field(default=None, metadata={"kind": "optional_path"})
    tls_ca: Path | None = field(default=None, metadata={"kind": "optional_path"})
    # A link silent this long is closed (a peer that lost power leaves a half-open connection,
    # which would otherwise block `topics promote`); replicators' heartbeats must be shorter.
    link_idle_timeout_ms: int = _setting(30_000, "duration", lo=1000, hi=3_600_000)


# SASL mechanisms the Kafka listener offers (docs/KAFKA.md).
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# The Kafka listener's default address; tests set the variable to "127.0.0.1:0" (a free port) so
# that the many supervisors they start never fight over 9092.
ENV_KAFKA_LISTENERS = "EDGEBUS_KAFKA_LISTENERS"
DEFAULT_KAFKA_LISTENERS = "127.0.0.1:9092"


def _default_kafka_listeners() -> tuple[str, ...]:
    return _parse_kafka_listeners(os.environ.get(ENV_KAFKA_LISTENERS) or DEFAULT_KAFKA_LISTENERS)


@dataclass(frozen=True)
class KafkaSettings:
    """The Kafka wire-protocol listener (edgebus/server/listeners/kafka.py, docs/KAFKA.md)."""

    enabled: bool = _setting(True, "bool")
    # host:port, or a list of them; a non-loopback address needs TLS or SASL.
    listeners: tuple[str, ...] = field(default_factory=_default_kafka_listeners,
                                       metadata={"kind": "kafka_listeners"})
    # The host (or host:port) clients are told to connect to in Metadata; null: the listener's.
    advertised: str | None = _setting(None, "optional_str")
    # TLS: certificate chain and key (PEM); with tls_ca, clients must present a certificate
    # that CA signed (mutual TLS).
    tls_cert: Path | None = field(default=None, metadata={"kind": "optional_path"})
    tls_key: Path | None = field(default=None, metadata={"kind": "optional_path"})
    tls_ca: Path | None = field(default=None, metadata={"kind": "optional_path"})
    # SASL: the mechanisms offered (none: no authentication) and the credentials file
    # (`edgebus kafka-user add`, docs/KAFKA.md: SCRAM salted keys, never plain passwords).
    sasl_mechanisms: tuple[str, ...] = _setting((), "sasl_mechanisms")
    sasl_credentials_file: Path | None = field(default=None, metadata={"kind": "optional_path"})


@dataclass(frozen=True)
class HttpSettings:
    """The HTTP API and web console (docs/HTTP.md), a listener in the supervisor."""

    enabled: bool = _setting(False, "bool")
    # host:port; anything but loopback needs tls_cert, tls_key and users_file (refused otherwise).
    listen: str | None = _setting("127.0.0.1:8470", "replica_listen")
    # TLS: certificate chain and key (PEM).
    tls_cert: Path | None = field(default=None, metadata={"kind": "optional_path"})
    tls_key: Path | None = field(default=None, metadata={"kind": "optional_path"})
    # YAML mapping of user name -> secret (mode 0600): `Authorization: Bearer <secret>` or HTTP
    # basic with that user and secret. Without it (loopback only) no authentication is asked.
    users_file: Path | None = field(default=None, metadata={"kind": "optional_path"})
    # Bounds: connections at once, a request body, live-tail (SSE) streams at once.
    # At most 100: HTTP and replica peers share the unknown uid's limits.max_connections_per_uid
    # (128 by default), and a refusal there would be a socket-protocol frame, not HTTP.
    max_connections: int = _setting(32, "int", 1, 100)
    max_body_bytes: int = _setting(2 * MiB, "size", 4 * KiB, F.MAX_BATCH_BYTES * 2)
    max_streams: int = _setting(8, "int", 1, 1024)


@dataclass(frozen=True)
class Config:
    data_dir: Path = field(default_factory=paths.default_data_dir, metadata={"kind": "path"})
    socket: Path = field(default_factory=paths.default_socket_path, metadata={"kind": "path"})
    socket_mode: int = _setting(0o660, "mode")
    log_level: str = _setting("INFO", "level")
    log: LogSettings = field(default_factory=LogSettings)
    limits: Limits = field(default_factory=Limits)
    disk: DiskSettings = field(default_factory=DiskSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    replica: ReplicaSettings = field(default_factory=ReplicaSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topic_defaults: TopicSettings = field(default_factory=TopicSettings)
    topics: tuple[TopicSpec, ...] = ()
    # Access control (edgebus/acl/settings.py, docs/SECURITY.md); applied again on SIGHUP.
    acl: AclSettings = field(default_factory=AclSettings)
    # The file this was read from (None for built-in defaults); not part of equality.
    source: Path | None = field(default=None, compare=False)

    def with_overrides(self, *, data_dir: str | Path | None = None,
                       socket: str | Path | None = None, log_level: str | None = None) -> Config:
        """A copy with command-line values in place of the file's (relative paths are taken
        from the current directory)."""
        changes: dict[str, Any] = {}
        try:
            if data_dir is not None:
                changes["data_dir"] = Path(data_dir).expanduser().absolute()
            if socket is not None:
                changes["socket"] = _check_socket(Path(socket).expanduser().absolute())
            if log_level is not None:
                changes["log_level"] = _parse_level(log_level)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return dataclasses.replace(self, **changes)


def _check_replica(r: ReplicaSettings, base_dir: Path | None) -> ReplicaSettings:
    """Paths taken from the config's directory; TLS settings that make sense together."""
    paths: dict[str, Any] = {k: _resolve(getattr(r, k), base_dir) for k in
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


def _check_http(h: HttpSettings, base_dir: Path | None) -> HttpSettings:
    """Paths taken from the config's directory; off loopback, TLS and authentication or refusal."""
    paths: dict[str, Any] = {k: _resolve(getattr(h, k), base_dir) for k in
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


def _check_kafka(k: KafkaSettings, base_dir: Path | None) -> KafkaSettings:
    """Paths taken from the config's directory; no listener open to the network unprotected."""
    paths: dict[str, Any] = {f: _resolve(getattr(k, f), base_dir) for f in
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


def _check_socket(p: Path) -> Path:
    if len(os.fsencode(p)) > MAX_SOCKET_PATH_BYTES:
        raise ValueError(f"socket path {str(p)!r} is longer than {MAX_SOCKET_PATH_BYTES} bytes, "
                         "the limit for a Unix socket")
    return p


# --- mapping -> dataclasses ----------------------------------------------------------------------


class InvalidKey(Exception):
    """A config key and what is wrong with its value; loaders turn it into one ConfigError line
    (shared with other config loaders, bridges/mqtt/config.py, so both files word it alike)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message)
        self.key, self.message = key, message


def join_key(prefix: str, key: str) -> str:
    """The dotted name of `key` inside the section `prefix` ("" at the top level)."""
    return f"{prefix}.{key}" if prefix else key


def as_mapping(value: Any, where: str) -> dict[str, Any]:
    """`value` as a mapping with string keys (None: empty), else InvalidKey naming `where`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidKey(where or "(top level)", f"expected a mapping, got {_describe(value)}")
    for k in value:
        if not isinstance(k, str):
            raise InvalidKey(where or "(top level)", f"keys must be strings, got {_describe(k)}")
    return value


def _unknown(key: str, where: str, allowed: list[str]) -> InvalidKey:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(allowed)})"
    return InvalidKey(join_key(where, key), f"unknown key{hint}")


def _build(cls: type, data: dict[str, Any], where: str, base: Any = None,
           extra: tuple[str, ...] = ()) -> Any:
    """An instance of the settings dataclass `cls` from `data`, starting from `base`."""
    fields = {f.name: f for f in dataclasses.fields(cls) if "kind" in f.metadata}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key in extra:
            continue
        if key not in fields:
            raise _unknown(key, where, [*extra, *fields])
        f = fields[key]
        try:
            value = _PARSERS[f.metadata["kind"]](raw)
            if isinstance(value, int):
                _check_bounds(f, value)
        except ValueError as e:
            raise InvalidKey(join_key(where, key), str(e)) from None
        values[key] = value
    return dataclasses.replace(base, **values) if base is not None else cls(**values)


def _topic_name(value: Any, where: str) -> str:
    key = join_key(where, "name")
    if not isinstance(value, str):
        raise InvalidKey(key, f"expected a topic name, got {_describe(value)}")
    try:
        validate_topic_name(value)  # the storage's rule, so that both agree
    except InvalidTopicError as e:
        raise InvalidKey(key, str(e)) from None
    return value


def _topics(value: Any, defaults: TopicSettings) -> tuple[TopicSpec, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidKey("topics", f"expected a list of topics, got {_describe(value)}")
    specs: list[TopicSpec] = []
    first_seen: dict[str, int] = {}
    for i, item in enumerate(value):
        where = f"topics[{i}]"
        item = as_mapping(item, where)
        if "name" not in item:
            raise InvalidKey(where, "missing required key 'name'")
        name = _topic_name(item["name"], where)
        if name in first_seen:
            raise InvalidKey(f"{where}.name",
                           f"topic {name!r} is declared twice (also topics[{first_seen[name]}])")
        first_seen[name] = i
        specs.append(TopicSpec(name, _build(TopicSettings, item, where, defaults, extra=("name",))))
    return tuple(specs)


def _resolve(p: Path, base_dir: Path | None) -> Path:
    return base_dir / p if base_dir is not None and not p.is_absolute() else p


def config_from_mapping(data: Any, source: str | Path | None = None) -> Config:
    """A Config from an already-parsed YAML document (None means all defaults). Relative paths
    are taken from the directory of `source` when it is given."""
    src = Path(source) if source is not None else None
    try:
        top = as_mapping(data, "")
        sections = {"log": LogSettings, "limits": Limits, "topic_defaults": TopicSettings,
                    "disk": DiskSettings, "metrics": MetricsSettings, "replica": ReplicaSettings,
                    "http": HttpSettings,
                    "kafka": KafkaSettings}
        known = [f.name for f in dataclasses.fields(Config) if f.name != "source"]
        for key in top:
            if key not in known:
                raise _unknown(key, "", known)
        built: dict[str, Any] = {
            name: _build(cls, as_mapping(top.get(name), name), name) for name, cls in sections.items()
        }
        scalars = {k: v for k, v in top.items() if k not in sections and k not in ("topics", "acl")}
        plain = _build(Config, scalars, "")
        built["topics"] = _topics(top.get("topics"), built["topic_defaults"])
        base_dir = src.parent if src is not None else None
        for key in ("data_dir", "socket"):
            if key in scalars:
                built[key] = _resolve(getattr(plain, key), base_dir)
        built["replica"] = _check_replica(built["replica"], base_dir)
        built["http"] = _check_http(built["http"], base_dir)
        try:
            built["acl"] = parse_section(top.get("acl"), base_dir, read_yaml_file)
        except AclKeyError as e:
            raise InvalidKey(e.key, e.message) from None
        built["kafka"] = _check_kafka(built["kafka"], base_dir)
        if "socket" in built:
            try:
                _check_socket(built["socket"])
            except ValueError as e:
                raise InvalidKey("socket", str(e)) from None
        return dataclasses.replace(plain, source=src, **built)
    except InvalidKey as e:
        prefix = f"{src}: " if src is not None else ""
        err = ConfigError(f"{prefix}{e.key}: {e.message}")
        err.key, err.file = e.key, src  # type: ignore[attr-defined]
        raise err from None


# --- YAML ----------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently) and marks
    integers written with a leading zero, so that `socket_mode: 660` is not taken as 0o1224."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        except TypeError:
            pass  # unhashable: construct_mapping reports it
    return loader.construct_mapping(node, deep=True)


def _construct_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    value = loader.construct_yaml_int(node)
    text = str(node.value).replace("_", "").lstrip("+-")
    return _OctalInt(value) if re.fullmatch(r"0[0-7]+", text) else value


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_config(path: str | Path | None = None) -> Config:
    """The configuration from `path`; without one, from $EDGEBUS_CONFIG if set, else the
    built-in defaults."""
    if path is None:
        path = os.environ.get(paths.ENV_CONFIG) or None
    if path is None:
        return Config()
    path = Path(path).expanduser()
    return config_from_mapping(read_yaml_file(path), source=path)


def read_yaml_file(path: Path) -> Any:
    """The parsed YAML document in `path`, read with the strict loader (bounded size, UTF-8, no
    duplicate keys, octal-looking integers marked); ConfigError names the file and the line.
    Shared with other config loaders (bridges/mqtt/config.py) so that every file obeys one rule."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; is this the config file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (bad byte at offset {e.start})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = e.problem or e.context or "syntax error"
        raise ConfigError(f"{path}: {where}invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as e:  # a control character such as NUL: say where, on one line
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        ch = e.character
        code = ch if isinstance(ch, int) else ord(ch[:1] or "\0")
        raise ConfigError(f"{path}: line {line}, column {column}: invalid YAML: the control "
                          f"character U+{code:04X} is not allowed in YAML text") from None
    except yaml.YAMLError as e:  # every config error is one line (journald, `systemctl status`)
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    return data


def describe_value(value: Any) -> str:
    """A value as config error messages show it ("null", "a mapping", "'abc'")."""
    return _describe(value)


def check_topic_name(name: str) -> None:
    """InvalidTopicError unless `name` may name a topic: the storage's rule, for other config
    loaders (bridges) that cannot import edgebus.log."""
    validate_topic_name(name)


def parse_topic_setting(key: str, value: str) -> int | str:
    """One `--config key=value` of `edgebus topics create|alter`, checked like the file's keys:
    a number (size, duration, count), or a word for on_disk_full."""
    if key not in TOPIC_CONFIG_KEYS:
        raise _unknown_config(key)
    f = next(f for f in dataclasses.fields(TopicSettings) if f.name == key)
    try:
        n = _PARSERS[f.metadata["kind"]](value)
        if isinstance(n, str):  # a word setting (on_disk_full): its parser checked it
            return n
        if not isinstance(n, int):
            raise ValueError(f"expected a number, got {value!r}")
        _check_bounds(f, n)
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from None
    return n


def _unknown_config(key: str) -> ConfigError:
    e = _unknown(key, "", list(TOPIC_CONFIG_KEYS))
    return ConfigError(f"{e.key}: {e.message}")


def load_replica_tokens(path: Path | None) -> dict[str, str]:
    """replica.tokens_file: a YAML mapping of peer node name -> token ({} without a file). The
    file holds secrets, so one that other users can read is refused (as ssh refuses a key)."""
    if path is None:
        return {}
    check_private(path, "replica.tokens_file")
    doc = read_yaml_file(path)
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of node name -> token")
    out: dict[str, str] = {}
    for node, token in doc.items():
        if not isinstance(node, str) or not NODE_NAME_RE.fullmatch(node):
            raise ConfigError(f"{path}: {node!r} is not a node name")
        if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"{path}: the token of {node} must be a string of at least "
                              f"{MIN_TOKEN_CHARS} characters")
        out[node] = token
    return out
