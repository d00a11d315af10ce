"""The `edgebus` command line: argument parsing of every command, exit codes, and the commands'
own logic run against fake clients (no supervisor needed)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

import edgebus
from edgebus import paths
from edgebus.cli import consume, produce
from edgebus.cli.main import build_parser, main, parse_args
from edgebus.config import Config
from edgebus.errors import BrokerUnavailableError, RecordTooLargeError, UnknownTopicError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (paths.ENV_CONFIG, paths.ENV_DATA_DIR, paths.ENV_SOCKET):
        monkeypatch.delenv(var, raising=False)


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


# --- parsing -------------------------------------------------------------------------------------


def test_serve_args() -> None:
    a = parse_args(["serve"])
    assert a.command == "serve" and a.config is None and a.data_dir is None
    assert not hasattr(a, "socket") and a.log_level is None
    a = parse_args(["serve", "--config", "c.yaml", "--data-dir", "d", "--socket", "s.sock",
                    "--log-level", "debug"])
    assert (a.config, a.data_dir, a.socket, a.log_level) == ("c.yaml", "d", "s.sock", "DEBUG")


def test_topics_args() -> None:
    a = parse_args(["topics", "create", "events", "--partitions", "3", "--config",
                    "retention_ms=7d", "segment_bytes=1MiB", "--config", "retention_bytes=-1"])
    assert (a.command, a.topics_command, a.name, a.partitions) == ("topics", "create", "events", 3)
    assert a.configs == [("retention_ms", "604800000"), ("segment_bytes", "1048576"),
                         ("retention_bytes", "-1")]
    a = parse_args(["topics", "create", "events"])
    assert a.partitions is None and a.configs == []
    assert parse_args(["topics", "list"]).topics_command == "list"
    assert parse_args(["topics", "describe", "events"]).name == "events"
    assert parse_args(["topics", "delete", "events"]).name == "events"


@pytest.mark.parametrize("argv", [
    ["--config", "retention_ms=7d", "events"],
    ["--config", "retention_ms=7d", "segment_bytes=1MiB", "events", "--partitions", "3"],
    ["--config", "retention_ms=7d", "--config", "segment_bytes=1MiB", "events"],
    ["--partitions", "3", "--config", "retention_ms=7d", "events", "--config", "segment_bytes=1MiB"],
])
def test_topics_create_name_after_config(argv: list[str]) -> None:
    # Issue 14 item 13: `--config a=b NAME` was a usage error (the option swallowed NAME).
    a = parse_args(["topics", "create", *argv])
    assert a.name == "events"
    assert a.configs[0] == ("retention_ms", "604800000")
    assert a.partitions in (None, 3)


def test_topics_create_usage_names_name_as_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse_args(["topics", "create", "--config", "retention_ms=7d"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "required: NAME" in err and "[NAME]" not in err


def test_produce_args() -> None:
    a = parse_args(["produce", "t"])
    assert (a.topic, a.key_separator, a.partition, a.acks) == ("t", None, None, "written")
    a = parse_args(["produce", "t", "--key-separator", ":", "--partition", "2",
                    "--acks", "durable"])
    assert (a.key_separator, a.partition, a.acks) == (":", 2, "durable")
    assert parse_args(["produce", "t", "--acks", "none"]).acks == "none"


def test_consume_args() -> None:
    a = parse_args(["consume", "t"])
    assert (a.topic, a.group, a.from_beginning, a.partition, a.offset) == ("t", None, False, None,
                                                                           None)
    assert (a.max, a.format, a.print_key, a.timeout_ms) == (None, "text", False, None)
    a = parse_args(["consume", "t", "--group", "g", "--from-beginning", "--max", "5",
                    "--format", "json", "--timeout-ms", "0"])
    assert (a.group, a.from_beginning, a.max, a.format, a.timeout_ms) == ("g", True, 5, "json", 0)
    a = parse_args(["consume", "t", "--partition", "1", "--offset", "42", "--print-key"])
    assert (a.partition, a.offset, a.print_key) == (1, 42, True)


def test_status_args() -> None:
    assert parse_args(["status"]).json is False
    assert parse_args(["status", "--json"]).json is True


@pytest.mark.parametrize("argv", [
    ["topics", "create", "t"], ["topics", "list"], ["topics", "describe", "t"],
    ["topics", "delete", "t"], ["produce", "t"], ["consume", "t"], ["status"],
])
def test_socket_on_every_client_command(argv: list[str]) -> None:
    assert parse_args([*argv, "--socket", "/x.sock"]).socket == "/x.sock"
    assert parse_args(["--socket", "/y.sock", *argv]).socket == "/y.sock"
    assert not hasattr(parse_args(argv), "socket")


def test_build_parser_lists_every_command() -> None:
    help_text = build_parser().format_help()
    for command in ("serve", "topics", "produce", "consume", "status"):
        assert command in help_text


@pytest.mark.parametrize(("argv", "message"), [
    ([], "required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["topics"], "required: COMMAND"),
    (["topics", "create"], "required: NAME"),
    (["topics", "create", "t", "--partitions", "0"], "partitions must be between 1 and 1024"),
    (["topics", "create", "t", "--partitions", "x"], "partitions must be an integer"),
    (["topics", "create", "t", "--config", "retention_ms"], "expected key=value"),
    (["topics", "create", "t", "--config", "retention_ms=soon"], "expected a duration"),
    (["topics", "create", "t", "--config", "retension_ms=1"], "did you mean 'retention_ms'"),
    (["topics", "describe"], "required: NAME"),
    (["produce"], "required: TOPIC"),
    (["produce", "t", "--acks", "all"], "invalid choice: 'all'"),
    (["produce", "t", "--key-separator", ""], "must not be empty"),
    (["produce", "t", "--partition", "-1"], "partition must be between 0"),
    (["consume", "t", "--offset", "5"], "--offset needs --partition"),
    (["consume", "t", "--partition", "0", "--offset", "5", "--from-beginning"],
     "cannot be used together"),
    (["consume", "t", "--offset", "-5", "--partition", "0"], "offset must be at least 0"),
    (["consume", "t", "--max", "0"], "--max must be at least 1"),
    (["consume", "t", "--format", "xml"], "invalid choice: 'xml'"),
    (["consume", "t", "--format", "json", "--print-key"], "--format text only"),
    (["consume", "t", "--timeout-ms", "-1"], "--timeout-ms must be at least 0"),
    (["serve", "--log-level", "loud"], "invalid choice: 'LOUD'"),
    (["status", "--verbose"], "unrecognized arguments: --verbose"),
])
def test_usage_errors_exit_2(argv: list[str], message: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert message in usage_error(argv, capsys)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"edgebus {edgebus.__version__}"


# --- error handling in main ----------------------------------------------------------------------


def test_edgebus_error_exits_1_without_traceback(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise BrokerUnavailableError("cannot connect to the edgebus supervisor at /nope.sock")

    monkeypatch.setattr(edgebus, "Admin", fail)
    assert main(["topics", "list", "--socket", "/nope.sock"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgebus: error: cannot connect to the edgebus supervisor at /nope.sock")
    assert "Traceback" not in err


def test_keyboard_interrupt_exits_130_quietly(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    def interrupt(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(edgebus, "Admin", interrupt)
    assert main(["status"]) == 130
    assert capsys.readouterr().err == ""


def test_serve_builds_config_and_calls_supervisor(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    # A stand-in module: this tests the command, not the supervisor.
    seen: list[Config] = []
    fake = ModuleType("edgebus.server.supervisor")
    # The file as read goes along (a reload compares with it: edgebus/server/reload.py).
    fake.run = lambda config, file_config: seen.extend((config, file_config)) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "edgebus.server.supervisor", fake)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("log_level: ERROR\nlimits: {max_connections: 3}\n")
    assert main(["serve", "--config", str(cfg), "--data-dir", str(tmp_path / "d"),
                 "--socket", str(tmp_path / "s.sock")]) == 7
    (config, file_config) = seen
    assert config.data_dir == tmp_path / "d" and config.socket == tmp_path / "s.sock"
    assert config.limits.max_connections == 3 and config.log_level == "ERROR"
    assert file_config.data_dir != config.data_dir and file_config.limits == config.limits


def test_serve_bad_config_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 14 item 7: a configuration error exits 78 (EX_CONFIG), so that the unit's
    # RestartPreventExitStatus=78 stops a restart loop; it used to exit 1.
    cfg = tmp_path / "c.yaml"
    cfg.write_text("limits: {max_connections: lots}\n")
    assert main(["serve", "--config", str(cfg)]) == 78
    assert capsys.readouterr().err == (
        f"edgebus: error: {cfg}: limits.max_connections: expected integer, got 'lots'\n")


# --- commands against fake clients ---------------------------------------------------------------


class FakeFuture:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def get(self, timeout: float | None = None) -> None:
        if self.error:
            raise self.error


class FakeProducer:
    instances: list[FakeProducer] = []

    def __init__(self, socket: str | None = None, acks: str = "written", **kw: Any) -> None:
        self.socket, self.acks, self.sent, self.closed = socket, acks, [], False
        FakeProducer.instances.append(self)

    def send(self, topic: str, value: bytes, key: bytes | None = None,
             partition: int | None = None, **kw: Any) -> FakeFuture:
        self.sent.append((topic, key, value, partition))
        return FakeFuture(RecordTooLargeError("too big") if value == b"HUGE" else None)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def run_produce(monkeypatch: pytest.MonkeyPatch, argv: list[str], data: bytes) -> FakeProducer:
    FakeProducer.instances.clear()
    monkeypatch.setattr(edgebus, "Producer", FakeProducer)
    args = parse_args(["produce", *argv])
    produce.run(args, stdin=io.BytesIO(data))
    return FakeProducer.instances[0]


def test_produce_one_record_per_line(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    p = run_produce(monkeypatch, ["t", "--acks", "durable", "--socket", "/s"],
                    b"a\n\nc\r\nlast-without-newline")
    assert p.sent == [("t", None, b"a", None), ("t", None, b"", None), ("t", None, b"c\r", None),
                      ("t", None, b"last-without-newline", None)]
    assert (p.acks, p.socket, p.closed) == ("durable", "/s", True)
    assert capsys.readouterr().err == "produced 4 records to t\n"


def test_produce_keys_and_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    p = run_produce(monkeypatch, ["t", "--key-separator", "::", "--partition", "1"],
                    b"k1::v1\nk2::v::2\n::empty-key\n")
    assert p.sent == [("t", b"k1", b"v1", 1), ("t", b"k2", b"v::2", 1), ("t", b"", b"empty-key", 1)]


def test_produce_line_without_separator(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(edgebus.errors.InvalidRequestError, match="line 2 has no key separator"):
        run_produce(monkeypatch, ["t", "--key-separator", ","], b"k,v\nnokey\n")
    assert FakeProducer.instances[0].closed


def test_produce_send_failure_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RecordTooLargeError):
        run_produce(monkeypatch, ["t"], b"ok\nHUGE\n")


def test_produce_default_socket_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.ENV_SOCKET, "/env.sock")
    assert run_produce(monkeypatch, ["t"], b"x\n").socket == "/env.sock"


def rec(offset: int, value: bytes | None, key: bytes | None = None, partition: int = 0,
        headers: list[tuple[str, bytes | None]] | None = None) -> Any:
    return SimpleNamespace(topic="t", partition=partition, offset=offset, timestamp=1000 + offset,
                           key=key, value=value, headers=headers or [])


class FakeConsumer:
    instances: list[FakeConsumer] = []
    script: list[list[Any]] = []
    partitions: set[int] = {0, 1}

    def __init__(self, *topics: str, **kw: Any) -> None:
        self.topics, self.kw = topics, kw
        self.calls: list[tuple[Any, ...]] = []
        self.polls = list(FakeConsumer.script)
        FakeConsumer.instances.append(self)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(FakeConsumer.partitions)

    def assign(self, tps: list[Any]) -> None:
        self.calls.append(("assign", list(tps)))

    def seek(self, tp: Any, offset: int) -> None:
        self.calls.append(("seek", tp, offset))

    def seek_to_beginning(self, *tps: Any) -> None:
        self.calls.append(("seek_to_beginning", *tps))

    def beginning_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: 0 for tp in tps}

    def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: 1 << 40 for tp in tps}

    def poll(self, timeout_ms: float = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        self.calls.append(("poll", timeout_ms, max_records))
        records = self.polls.pop(0) if self.polls else []
        return {("t", 0): records} if records else {}

    def close(self) -> None:
        self.calls.append(("close",))


def run_consume(monkeypatch: pytest.MonkeyPatch, argv: list[str],
                script: list[list[Any]]) -> tuple[FakeConsumer, bytes]:
    FakeConsumer.instances.clear()
    FakeConsumer.script = script
    monkeypatch.setattr(edgebus, "Consumer", FakeConsumer)
    monkeypatch.setattr(consume, "POLL_SLICE_MS", 1)
    out = io.BytesIO()
    assert consume.run(parse_args(["consume", *argv]), stdout=out) == 0
    return FakeConsumer.instances[0], out.getvalue()


def test_consume_text_until_max(monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    c, out = run_consume(monkeypatch, ["t", "--max", "3", "--from-beginning"],
                         [[rec(0, b"a"), rec(1, None)], [], [rec(2, b"c"), rec(3, b"d")]])
    assert out == b"a\nnull\nc\n"
    tp0, tp1 = edgebus.TopicPartition("t", 0), edgebus.TopicPartition("t", 1)
    assert c.calls[0] == ("assign", [tp0, tp1])
    assert c.calls[1] == ("seek_to_beginning", tp0, tp1)
    assert ("poll", 1, 1) in c.calls  # asks only for what --max still allows
    assert c.calls[-1] == ("close",)
    assert c.kw["auto_offset_reset"] == "earliest" and c.kw["enable_auto_commit"] is False
    assert capsys.readouterr().err == "consumed 3 records\n"


def test_consume_print_key(monkeypatch: pytest.MonkeyPatch) -> None:
    _, out = run_consume(monkeypatch, ["t", "--print-key", "--max", "2"],
                         [[rec(0, b"v", key=b"k"), rec(1, b"w")]])
    assert out == b"k\tv\nnull\tw\n"


def test_consume_json(monkeypatch: pytest.MonkeyPatch) -> None:
    _, out = run_consume(monkeypatch, ["t", "--format", "json", "--max", "1"],
                         [[rec(5, b"caf\xc3\xa9 \xff", key=b"k",
                               headers=[("h", b"1"), ("n", None)])]])
    assert json.loads(out) == {
        "topic": "t", "partition": 0, "offset": 5, "timestamp": 1005, "key": "k",
        "value": {"base64": "Y2Fmw6kg/w=="}, "headers": [["h", "1"], ["n", None]],
    }


def test_consume_timeout_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    c, out = run_consume(monkeypatch, ["t", "--timeout-ms", "20"], [[rec(0, b"a")]])
    assert out == b"a\n"
    assert c.calls[-1] == ("close",)


def test_consume_partition_and_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    c, _ = run_consume(monkeypatch, ["t", "--partition", "1", "--offset", "7", "--timeout-ms", "0"],
                       [])
    tp1 = edgebus.TopicPartition("t", 1)
    assert c.calls[:2] == [("assign", [tp1]), ("seek", tp1, 7)]


def test_consume_unknown_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(edgebus.errors.UnknownPartitionError, match="no partition 5"):
        run_consume(monkeypatch, ["t", "--partition", "5"], [])
    assert FakeConsumer.instances[0].calls[-1] == ("close",)


def test_consume_unknown_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FakeConsumer, "partitions", set())
    with pytest.raises(UnknownTopicError):
        run_consume(monkeypatch, ["t"], [])


def test_consume_group_subscribes(monkeypatch: pytest.MonkeyPatch) -> None:
    c, _ = run_consume(monkeypatch, ["t", "--group", "g", "--timeout-ms", "0"], [])
    assert c.topics == ("t",) and c.kw["group_id"] == "g"
    assert c.kw["auto_offset_reset"] == "latest"
    assert not [call for call in c.calls if call[0] in ("assign", "seek")]


class FakeAdmin:
    created: list[tuple[Any, ...]] = []

    def __init__(self, socket: str | None = None) -> None:
        self.socket = socket

    def __enter__(self) -> FakeAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def create_topic(self, name: str, partitions: int = 1, config: Any = None,
                     exist_ok: bool = False) -> bool:
        FakeAdmin.created.append((name, partitions, config))
        return True

    def list_topics(self) -> list[str]:
        return ["b", "a"]

    def describe_topic(self, name: str) -> Any:
        from edgebus.protocol.messages import ConfigEntry, PartitionMetadata, TopicMetadata

        return TopicMetadata(name, 0, "", [ConfigEntry("retention_ms", "1000")],
                             [PartitionMetadata(1, 0, 5, 2048, 1),
                              PartitionMetadata(0, 3, 9, 10, 2)])

    def delete_topic(self, name: str) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"version": "0.1.0", "pid": 42, "uptime_s": 3.5, "data_dir": "/d", "socket": "/s",
                "topics": {"a": {"partitions": [
                    {"partition": 0, "log_start_offset": 3, "log_end_offset": 9,
                     "size_bytes": 10, "segments": 2, "offline": False}]}},
                "clients": [], "groups": []}


def test_topics_commands(monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(edgebus, "Admin", FakeAdmin)
    FakeAdmin.created.clear()
    assert main(["topics", "create", "a", "--config", "retention_ms=1s"]) == 0
    assert main(["topics", "create", "b", "--partitions", "4"]) == 0
    assert FakeAdmin.created == [("a", 1, {"retention_ms": "1000"}), ("b", 4, None)]
    assert main(["topics", "list"]) == 0
    assert main(["topics", "delete", "a"]) == 0
    out = capsys.readouterr().out
    assert out == "created topic a\ncreated topic b\na\nb\ndeleted topic a\n"
    assert main(["topics", "describe", "a"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == ["Topic: a", "Partitions: 2", "Configs:", "  retention_ms = 1000"]
    assert out[5].split() == ["PARTITION", "LOG", "START", "LOG", "END", "SIZE", "SEGMENTS"]
    assert out[6].split() == ["0", "3", "9", "10", "B", "2"]
    assert out[7].split() == ["1", "0", "5", "2.0", "KiB", "1"]


def test_status(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(edgebus, "Admin", FakeAdmin)
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "0.1.0"
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "0.1.0" in out
    assert any(line.split()[:4] == ["a", "0", "3", "9"] for line in out.splitlines())


def test_status_of_an_unknown_document_is_shown_as_a_tree(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    doc = {"version": "9", "topics": [{"name": "a", "parts": [{"p": 0, "ok": True}]}],
           "clients": [], "note": None}
    monkeypatch.setattr(FakeAdmin, "status", lambda self: doc)
    monkeypatch.setattr(edgebus, "Admin", FakeAdmin)
    assert main(["status"]) == 0
    assert capsys.readouterr().out == (
        "version: 9\n"
        "topics:\n"
        "  - name: a\n"
        "    parts:\n"
        "      - p: 0\n"
        "        ok: true\n"
        "clients: []\n"
        "note: null\n")


# --- as a real process ---------------------------------------------------------------------------


def run_cli(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EDGEBUS_")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "edgebus.cli.main", *argv], cwd=ROOT,
                          env=environ, capture_output=True, text=True, timeout=60)


def test_help_as_a_process() -> None:
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    for command in ("serve", "topics", "produce", "consume", "status"):
        assert command in r.stdout


def test_usage_error_as_a_process() -> None:
    r = run_cli("consume")
    assert r.returncode == 2
    assert "required: TOPIC" in r.stderr


@pytest.mark.parametrize(("text", "where"), [
    (b"log_level: INFO\n\0\n", "line 2, column 1: invalid YAML: the control character U+0000"),
    (b"log_level: INFO\nlimits: [\n", "line 3, column 1: invalid YAML"),
    (b"socket: '/tmp/" + b"x" * 120 + b"'\n", "socket: socket path"),
    (b'"log\\nlevel": INFO\n', "log level: unknown key (did you mean 'log_level'?)"),
])
def test_config_errors_exit_78_with_one_line(tmp_path: Path, text: bytes, where: str) -> None:
    # Issue 14 item 7: every configuration error, a NUL byte included, is one line and exit 78.
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(text)
    r = run_cli("serve", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 78, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"edgebus: error: {cfg}: "), r.stderr
    assert where in r.stderr, r.stderr


def test_a_config_error_on_the_command_line_exits_78(tmp_path: Path) -> None:
    r = run_cli("serve", "--socket", "/tmp/" + "y" * 120, "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 78 and "longer than 107 bytes" in r.stderr, r.stderr


def test_no_supervisor_as_a_process(tmp_path: Path) -> None:
    sock = tmp_path / "absent.sock"
    r = run_cli("topics", "list", EDGEBUS_SOCKET=str(sock))
    assert r.returncode == 1
    assert r.stderr.startswith("edgebus: error: ")
    assert str(sock) in r.stderr
    assert "Traceback" not in r.stderr
