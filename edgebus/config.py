"""The supervisor's configuration: one YAML file mapped to frozen dataclasses.

Every key has a default, so no file (or an empty one) is a valid configuration. Each value is
checked against its field's kind and bounds; an unknown key, a wrong type or a value out of range
raises ConfigError naming the file and the full key path (`topics[1].partitions`), with a
suggestion for a misspelt key. `examples/edgebus.yaml` documents every key with its default.

Kept here: the sections of the log, limits, topics, disk and metrics, the whole Config and its
reading. Alongside: the value parsers and the mapping -> dataclass step (config_parse.py), the
listener sections `replica:`, `kafka:`, `http:` (config_listeners.py), the YAML reading
(config_yaml.py), the access rules (acl/settings.py). Their public names are importable from
here as well, as before the split.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgebus import format as F
from edgebus import paths
from edgebus.acl.settings import AclKeyError, AclSettings, parse_section
from edgebus.config_listeners import MIN_TOKEN_CHARS as MIN_TOKEN_CHARS
from edgebus.config_listeners import HttpSettings, KafkaSettings, ReplicaSettings
from edgebus.config_listeners import check_http as _check_http
from edgebus.config_listeners import check_kafka as _check_kafka
from edgebus.config_listeners import check_replica as _check_replica
from edgebus.config_listeners import load_replica_tokens as load_replica_tokens
from edgebus.config_parse import DAY, I32_MAX, I64_MAX, InvalidKey, MiB, as_mapping
from edgebus.config_parse import LOG_LEVELS as LOG_LEVELS
from edgebus.config_parse import PARSERS as _PARSERS
from edgebus.config_parse import SASL_MECHANISMS as SASL_MECHANISMS
from edgebus.config_parse import build as _build
from edgebus.config_parse import check_bounds as _check_bounds
from edgebus.config_parse import describe as _describe
from edgebus.config_parse import join_key as join_key
from edgebus.config_parse import parse_duration as parse_duration
from edgebus.config_parse import parse_level as _parse_level
from edgebus.config_parse import parse_size as parse_size
from edgebus.config_parse import resolve as _resolve
from edgebus.config_parse import setting as _setting
from edgebus.config_parse import unknown_key as _unknown
from edgebus.config_yaml import MAX_CONFIG_BYTES as MAX_CONFIG_BYTES
from edgebus.config_yaml import read_yaml_file
from edgebus.errors import ConfigError, InvalidTopicError
from edgebus.log.topic_config import DISK_FULL_REJECT, MAX_SEGMENT_BYTES, validate_topic_name
from edgebus.opsconfig import Threshold

# sun_path is 108 bytes on Linux, one of them the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


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
    # Topics (internal ones not counted) and their partitions together, however created (native,
    # Kafka CreateTopics / CreatePartitions / auto-creation, HTTP, declared, mirrors): each
    # partition holds open files and a directory, so a client looping over made-up names must not
    # exhaust a small gateway's file descriptors or inodes (TopicLimitError).
    max_topics: int = _setting(1000, "int", 1, 1_000_000)
    max_partitions: int = _setting(4000, "int", 1, 10_000_000)


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


def _check_socket(p: Path) -> Path:
    if len(os.fsencode(p)) > MAX_SOCKET_PATH_BYTES:
        raise ValueError(f"socket path {str(p)!r} is longer than {MAX_SOCKET_PATH_BYTES} bytes, "
                         "the limit for a Unix socket")
    return p


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
                # A section's key written at the top level (`retention_ms:` for
                # `topic_defaults.retention_ms`) is named with its section.
                homes = [name for name, cls in sections.items()
                         if key in {f.name for f in dataclasses.fields(cls)}]
                if homes:
                    raise InvalidKey(key, "unknown key at the top level (did you mean "
                                          f"{' or '.join(f'{h}.{key}' for h in homes)}?)")
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


def load_config(path: str | Path | None = None) -> Config:
    """The configuration from `path`; without one, from $EDGEBUS_CONFIG if set, else the
    built-in defaults."""
    if path is None:
        path = os.environ.get(paths.ENV_CONFIG) or None
    if path is None:
        return Config()
    path = Path(path).expanduser()
    return config_from_mapping(read_yaml_file(path), source=path)


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
