"""edgebus.config: defaults, parsing of sizes and durations, and every error naming its key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from edgebus import paths
from edgebus.acl.settings import KEYS as ACL_KEYS
from edgebus.config import (
    TOPIC_CONFIG_KEYS,
    Config,
    DiskSettings,
    KafkaSettings,
    Limits,
    LogSettings,
    MetricsSettings,
    ReplicaSettings,
    TopicSettings,
    TopicSpec,
    config_from_mapping,
    load_config,
    parse_duration,
    parse_size,
    parse_topic_setting,
)
from edgebus.errors import ConfigError, EdgebusError
from edgebus.log.topic_config import TopicConfig

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "edgebus.yaml"
DAY_MS = 86_400_000


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in (paths.ENV_CONFIG, paths.ENV_DATA_DIR, paths.ENV_SOCKET):
        monkeypatch.delenv(var, raising=False)


def write(tmp_path: Path, text: str, name: str = "edgebus.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(data: object) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, source="/etc/e.yaml")
    return str(info.value)


# --- defaults ------------------------------------------------------------------------------------


def test_defaults() -> None:
    c = load_config(None)
    assert c.data_dir == paths.default_data_dir()
    assert c.socket == paths.default_socket_path()
    assert c.socket_mode == 0o660
    assert c.log_level == "INFO"
    assert c.log == LogSettings(1000, 5000, 60_000)
    assert c.limits == Limits(256, 64 * 1024 * 1024, 30_000)
    assert c.topic_defaults == TopicSettings(
        partitions=1, retention_ms=7 * DAY_MS, retention_bytes=-1, segment_bytes=64 * 1024**2,
        segment_ms=7 * DAY_MS, max_message_bytes=1024**2, index_interval_bytes=4096,
    )
    assert c.topics == ()
    assert c.source is None


def test_empty_file_and_empty_sections_are_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()
    assert load_config(write(tmp_path, "log:\nlimits: {}\ntopics:\n")) == Config()


def test_defaults_follow_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(paths.ENV_DATA_DIR, str(tmp_path / "d"))
    monkeypatch.setenv(paths.ENV_SOCKET, str(tmp_path / "s.sock"))
    c = Config()
    assert c.data_dir == tmp_path / "d"
    assert c.socket == tmp_path / "s.sock"


def test_config_is_frozen() -> None:
    c = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.log_level = "DEBUG"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.limits.max_connections = 1  # type: ignore[misc]


def test_env_config_used_without_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    p = write(tmp_path, "log_level: debug\n")
    monkeypatch.setenv(paths.ENV_CONFIG, str(p))
    c = load_config(None)
    assert c.log_level == "DEBUG"
    assert c.source == p
    # An explicit path wins over the environment.
    assert load_config(write(tmp_path, "log_level: ERROR\n", "other.yaml")).log_level == "ERROR"


# --- a full file ---------------------------------------------------------------------------------


def test_full_file(tmp_path: Path) -> None:
    p = write(tmp_path, """
data_dir: data
socket: /run/eb/eb.sock
socket_mode: 0600
log_level: warning
log: {flush_interval_ms: 250ms, checkpoint_interval_ms: 10s, retention_check_interval_ms: 5m}
limits: {max_connections: 16, max_output_buffer_bytes: 8MiB, max_fetch_wait_ms: 1s}
topic_defaults:
  partitions: 2
  retention_ms: 12h
  retention_bytes: 1GiB
  segment_bytes: 16MiB
  segment_ms: 1d
  max_message_bytes: 512KiB
  index_interval_bytes: 8KiB
topics:
  - name: sensors
    partitions: 4
    retention_ms: 3d
  - {name: alerts}
""")
    c = load_config(p)
    assert c.data_dir == tmp_path / "data"  # relative to the file's directory
    assert c.socket == Path("/run/eb/eb.sock")
    assert c.socket_mode == 0o600
    assert c.log_level == "WARNING"
    assert c.log == LogSettings(250, 10_000, 300_000)
    assert c.limits == Limits(16, 8 * 1024**2, 1000)
    d = c.topic_defaults
    assert (d.partitions, d.retention_ms, d.retention_bytes) == (2, 12 * 3_600_000, 1024**3)
    assert (d.segment_bytes, d.segment_ms) == (16 * 1024**2, DAY_MS)
    assert (d.max_message_bytes, d.index_interval_bytes) == (512 * 1024, 8192)
    sensors, alerts = c.topics
    # Per-topic keys overlay topic_defaults; the rest come from topic_defaults.
    assert sensors == TopicSpec("sensors", dataclasses.replace(d, partitions=4,
                                                               retention_ms=3 * DAY_MS))
    assert alerts == TopicSpec("alerts", d)
    assert sensors.partitions == 4 and alerts.partitions == 2
    assert sensors.entries()["retention_ms"] == str(3 * DAY_MS)
    assert sensors.entries()["partitions"] == "4"
    assert set(d.config_entries()) == set(TOPIC_CONFIG_KEYS)


def test_home_is_expanded(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, "data_dir: ~/eb\n"))
    assert c.data_dir == Path("~/eb").expanduser()


def test_socket_mode_forms() -> None:
    assert config_from_mapping({"socket_mode": "0640"}).socket_mode == 0o640
    assert config_from_mapping({"socket_mode": "0o600"}).socket_mode == 0o600
    assert config_from_mapping({"socket_mode": 0}).socket_mode == 0


def test_with_overrides(tmp_path: Path) -> None:
    c = Config().with_overrides(data_dir=tmp_path / "d", socket="rel.sock", log_level="debug")
    assert c.data_dir == tmp_path / "d"
    assert c.socket == Path.cwd() / "rel.sock"
    assert c.log_level == "DEBUG"
    assert Config().with_overrides() == Config()
    with pytest.raises(ConfigError, match="longer than 107 bytes"):
        Config().with_overrides(socket="/" + "s" * 200)


# --- sizes and durations -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    (4096, 4096), ("4096", 4096), ("100B", 100), ("1KiB", 1024), ("64MiB", 64 * 1024**2),
    ("64 MiB", 64 * 1024**2), ("1GiB", 1024**3), ("2TiB", 2 * 1024**4), ("3mib", 3 * 1024**2),
    (-1, -1),
])
def test_parse_size(text: int | str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("64MB", "unknown size unit 'MB'"), ("1M", "unknown size unit 'M'"),
    ("1.5GiB", "expected a size"), ("lots", "expected a size"), ("", "expected a size"),
    (1.5, "expected a size"), (True, "got true"), (None, "got null"), ([1], "got a list"),
    ("64MiB extra", "expected a size"),
])
def test_parse_size_errors(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_size(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [
    (500, 500), ("500", 500), ("500ms", 500), ("30s", 30_000), ("15m", 900_000),
    ("12h", 12 * 3_600_000), ("7d", 7 * DAY_MS), ("2w", 14 * DAY_MS), (" 1 d ", DAY_MS),
])
def test_parse_duration(text: int | str, expected: int) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("7D", "unknown duration unit 'D'"), ("1y", "unknown duration unit 'y'"),
    ("1h30m", "expected a duration"), ("soon", "expected a duration"),
    (2.5, "expected a duration"), (False, "got false"),
])
def test_parse_duration_errors(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(text)  # type: ignore[arg-type]


def test_parse_topic_setting() -> None:
    assert parse_topic_setting("retention_ms", "7d") == 7 * DAY_MS
    assert parse_topic_setting("retention_bytes", "-1") == -1
    assert parse_topic_setting("segment_bytes", "1MiB") == 1024**2
    suggestion = r"retentoin_ms: unknown key \(did you mean 'retention_ms'"
    with pytest.raises(ConfigError, match=suggestion):
        parse_topic_setting("retentoin_ms", "1")
    with pytest.raises(ConfigError, match="partitions: unknown key"):
        parse_topic_setting("partitions", "3")  # a separate option, not a topic config entry
    with pytest.raises(ConfigError, match="segment_ms: must be at least 1"):
        parse_topic_setting("segment_ms", "0")


# --- errors name the file and the full key path --------------------------------------------------


@pytest.mark.parametrize(("data", "message"), [
    ({"limits": {"max_connections": "lots"}},
     "limits.max_connections: expected integer, got 'lots'"),
    ({"limits": {"max_connections": 0}}, "limits.max_connections: must be at least 1, got 0"),
    ({"limits": {"max_conections": 3}},
     "limits.max_conections: unknown key (did you mean 'max_connections'?)"),
    ({"limits": {"max_output_buffer_bytes": "64MB"}},
     "limits.max_output_buffer_bytes: unknown size unit 'MB'"),
    ({"limits": {"max_fetch_wait_ms": "30 seconds"}},
     "limits.max_fetch_wait_ms: unknown duration unit 'seconds'"),
    ({"limits": [1]}, "limits: expected a mapping, got a list"),
    ({"log": {"flush_interval_ms": 0}}, "log.flush_interval_ms: must be at least 1, got 0"),
    ({"log": {"flush_interval_ms": 1.5}}, "log.flush_interval_ms: expected a duration"),
    ({"log": {"fsync": 1}}, "log.fsync: unknown key"),
    ({"log": "fast"}, "log: expected a mapping, got 'fast'"),
    ({"lgo": {}}, "lgo: unknown key (did you mean 'log'?)"),
    ({"zzz": 1}, "zzz: unknown key (known keys: data_dir, socket,"),
    ({"retention_ms": "1d"},
     "retention_ms: unknown key at the top level (did you mean topic_defaults.retention_ms?)"),
    ({"check_interval_ms": "1s"},
     "check_interval_ms: unknown key at the top level (did you mean disk.check_interval_ms?)"),
    ({"log_level": "loud"}, "log_level: expected one of DEBUG, INFO, WARNING, ERROR, got 'loud'"),
    ({"log_level": False}, "log_level: expected one of DEBUG, INFO, WARNING, ERROR, got false"),
    ({"socket_mode": 660}, "socket_mode: write the mode in octal with a leading zero"),
    ({"socket_mode": "rw-rw----"}, "socket_mode: expected an octal file mode like 0660"),
    ({"socket_mode": "01777"}, "socket_mode: expected a file mode of at most 0777"),
    ({"data_dir": 5}, "data_dir: expected a path, got 5"),
    ({"data_dir": ""}, "data_dir: expected a path, got ''"),
    ({"socket": "/" + "x" * 120}, "socket: socket path"),
    ({"topic_defaults": {"partitions": 0}}, "topic_defaults.partitions: must be at least 1, got 0"),
    ({"topic_defaults": {"partitions": 5000}}, "topic_defaults.partitions: must be at most 1024"),
    ({"topic_defaults": {"retention_ms": -2}},
     "topic_defaults.retention_ms: must be at least 1 (or -1 for no limit), got -2"),
    ({"topic_defaults": {"retention_bytes": 0}},
     "topic_defaults.retention_bytes: must be at least 1"),
    ({"topic_defaults": {"max_message_bytes": "32MiB"}},
     "topic_defaults.max_message_bytes: must be at most 16777216"),
    ({"topic_defaults": {"segment_ms": -1}},
     "topic_defaults.segment_ms: must be at least 1, got -1"),
    ({"topic_defaults": {"name": "x"}}, "topic_defaults.name: unknown key"),
    ({"topics": {"a": 1}}, "topics: expected a list of topics, got a mapping"),
    ({"topics": ["a"]}, "topics[0]: expected a mapping, got 'a'"),
    ({"topics": [{"partitions": 1}]}, "topics[0]: missing required key 'name'"),
    ({"topics": [{"name": "a"}, {"name": "b", "partitons": 2}]},
     "topics[1].partitons: unknown key (did you mean 'partitions'?)"),
    ({"topics": [{"name": "a"}, {"name": "b", "partitions": "two"}]},
     "topics[1].partitions: expected integer, got 'two'"),
    ({"topics": [{"name": "a", "retention_ms": "1 fortnight"}]},
     "topics[0].retention_ms: unknown duration unit 'fortnight'"),
    ({"topics": [{"name": "a/b"}]}, "topics[0].name: topic name 'a/b' contains '/'"),
    ({"topics": [{"name": ".."}]}, "topics[0].name: topic name '..' is not allowed"),
    ({"topics": [{"name": "__x"}]}, "topics[0].name: topic name '__x': names starting with '__'"),
    ({"topics": [{"name": "x" * 201}]}, "topics[0].name: topic name is 201 characters long"),
    ({"topics": [{"name": 7}]}, "topics[0].name: expected a topic name, got 7"),
    ({"topics": [{"name": "a"}, {"name": "a"}]},
     "topics[1].name: topic 'a' is declared twice (also topics[0])"),
    ([1, 2], "(top level): expected a mapping, got a list"),
    ("text", "(top level): expected a mapping, got 'text'"),
    ({True: 1}, "(top level): keys must be strings, got true"),
    ({"limits": {1: 2}}, "limits: keys must be strings, got 1"),
])
def test_errors_name_file_and_key(data: object, message: str) -> None:
    text = error_of(data)
    assert text.startswith("/etc/e.yaml: ")
    assert message in text


def test_error_is_an_edgebus_error_with_key_and_file() -> None:
    with pytest.raises(EdgebusError) as info:
        config_from_mapping({"limits": {"max_connections": "lots"}}, source="/x.yaml")
    assert isinstance(info.value, ConfigError)
    assert info.value.key == "limits.max_connections"  # type: ignore[attr-defined]
    assert info.value.file == Path("/x.yaml")  # type: ignore[attr-defined]


def test_without_source_the_message_is_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^limits\.max_connections: expected integer"):
        config_from_mapping({"limits": {"max_connections": "lots"}})


# --- agreement with the storage's TopicConfig ----------------------------------------------------


def test_topic_defaults_equal_storage_defaults() -> None:
    assert TopicConfig.from_entries(TopicSettings().entries()) == TopicConfig()
    assert [f.name for f in dataclasses.fields(TopicSettings)] == [
        f.name for f in dataclasses.fields(TopicConfig) if f.name not in TopicConfig.IDENTITY]


@pytest.mark.parametrize("key", [f.name for f in dataclasses.fields(TopicSettings)])
def test_every_value_the_config_accepts_the_storage_accepts(key: str) -> None:
    f = next(f for f in dataclasses.fields(TopicSettings) if f.name == key)
    words = {"disk_policy": ("reject", "drop-oldest"),
             "cleanup_policy": ("delete", "compact", "compact,delete")}
    if f.metadata["kind"] in words:  # a word, not a number
        for word in words[f.metadata["kind"]]:
            settings = config_from_mapping({"topic_defaults": {key: word}}).topic_defaults
            assert getattr(TopicConfig.from_entries(settings.entries()), key) == word
        with pytest.raises(ConfigError):
            config_from_mapping({"topic_defaults": {key: "sometimes"}})
        return
    for value in (f.metadata["lo"], f.metadata["hi"], -1 if f.metadata["unlimited"] else None):
        if value is not None:
            settings = config_from_mapping({"topic_defaults": {key: value}}).topic_defaults
            assert getattr(TopicConfig.from_entries(settings.entries()), key) == value
    with pytest.raises(ConfigError):
        config_from_mapping({"topic_defaults": {key: f.metadata["lo"] - 1}})


# --- file-level errors ---------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    p = write(tmp_path, "limits:\n  max_connections: 3\n   bad: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(info.value).startswith(f"{p}: line 3, column 7: invalid YAML: ")


def test_yaml_unclosed_bracket(tmp_path: Path) -> None:
    p = write(tmp_path, "topics: [\n")
    pattern = rf"^{re.escape(str(p))}: line \d+, column \d+: invalid YAML"
    with pytest.raises(ConfigError, match=pattern):
        load_config(p)


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    p = write(tmp_path, "log:\n  flush_interval_ms: 1\n  flush_interval_ms: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(info.value) == (f"{p}: line 3, column 3: invalid YAML: duplicate key "
                               "'flush_interval_ms' (first on line 2)")


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    p = write(tmp_path, "x-small: &small {partitions: 2}\n")
    with pytest.raises(ConfigError, match="x-small: unknown key"):
        load_config(p)
    p = write(tmp_path, "topics:\n - &t {name: a, partitions: 2}\n - {<<: *t, name: b}\n")
    assert [(t.name, t.partitions) for t in load_config(p).topics] == [("a", 2), ("b", 2)]


def test_python_tags_are_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "log_level: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read the config file: No such file"):
        load_config(tmp_path / "nope.yaml")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"log_level: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)


def test_oversized_file(tmp_path: Path) -> None:
    p = write(tmp_path, "#" * (1024 * 1024 + 10))
    with pytest.raises(ConfigError, match="larger than"):
        load_config(p)


# --- the shipped example -------------------------------------------------------------------------


def test_example_loads_and_equals_the_defaults() -> None:
    c = load_config(EXAMPLE)
    assert c == Config()
    assert c.source == EXAMPLE


def test_example_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    sections = [Config, LogSettings, Limits, TopicSettings, DiskSettings, MetricsSettings,
                ReplicaSettings, KafkaSettings]
    names = {f.name for cls in sections for f in dataclasses.fields(cls)} - {"source"}
    names |= set(ACL_KEYS)
    missing = sorted(n for n in names if not re.search(rf"^\s*#?\s*{n}:", text, re.MULTILINE))
    assert missing == []


def test_example_commented_topics_parse() -> None:
    # The commented-out `topics:` example must be valid too once uncommented.
    text = EXAMPLE.read_text()
    block = text[text.index("# topics:"):]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    import yaml

    c = config_from_mapping(yaml.safe_load(uncommented))
    assert [t.name for t in c.topics] == ["sensors", "alerts"]
    assert c.topics[0].settings.retention_ms == 3 * DAY_MS
