"""`edgebus produce` and `edgebus consume` as kcat users use them (issue 14, item 20): headers, a
record delimiter, binary values from files, --exit-at-end, --format templates and binary-safe
JSON. The real CLI in a subprocess against a real supervisor."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgebus import Admin, Consumer, Producer
from edgebus.cli import produce as produce_cmd
from edgebus.errors import RecordTooLargeError

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ALL_BYTES = bytes(range(256))


def cli(sock: str, *args: str, stdin: bytes = b"", timeout: float = 60
        ) -> subprocess.CompletedProcess[bytes]:
    """Runs to its end by itself: a hang is a failure (TimeoutExpired), never a kill that passes."""
    return subprocess.run([sys.executable, "-m", "edgebus.cli.main", *args, "--socket", sock],
                          input=stdin, capture_output=True, timeout=timeout, cwd=ROOT)


def ok(r: subprocess.CompletedProcess[bytes]) -> bytes:
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def read_all(sock: str, topic: str) -> list:
    with Consumer(topic, socket=sock, auto_offset_reset="earliest", consumer_timeout_ms=1000) as c:
        return sorted(c, key=lambda r: (r.partition, r.offset))


@pytest.fixture
def topic(broker) -> str:
    with Admin(socket=broker.socket) as admin:
        admin.create_topic("t", partitions=2)
    return "t"


def test_produce_with_headers_a_nul_delimiter_and_a_fixed_key(broker, topic):
    data = b"line one\nstill one\0two\t\xff\0\0last"
    r = cli(broker.socket, "produce", topic, "-D", r"\0", "-H", "unit=C", "-H", "src=a=b",
            "--key", "k1", stdin=data)
    assert ok(r) == b""
    assert r.stderr == b"produced 4 records to t\n"
    recs = read_all(broker.socket, topic)
    assert [r.value for r in recs] == [b"line one\nstill one", b"two\t\xff", b"", b"last"]
    assert {r.key for r in recs} == {b"k1"}
    assert all(r.headers == [("unit", b"C"), ("src", b"a=b")] for r in recs)


def test_produce_delimiter_of_several_bytes_and_key_separator(broker, topic):
    r = cli(broker.socket, "produce", topic, "-D", "||", "--key-separator", "=",
            "--partition", "1", stdin=b"a=1||b=2|3||c=||")
    ok(r)
    recs = read_all(broker.socket, topic)
    assert [(r.key, r.value) for r in recs] == [(b"a", b"1"), (b"b", b"2|3"), (b"c", b"")]
    bad = cli(broker.socket, "produce", topic, "-D", "||", "--key-separator", "=",
              stdin=b"a=1||nokey||")
    assert bad.returncode == 1
    assert b"record 2 has no key separator" in bad.stderr


def test_binary_value_files_come_back_byte_for_byte(broker, topic, tmp_path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(ALL_BYTES * 3 + b"\n\r\n")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    ok(cli(broker.socket, "produce", topic, "--partition", "0", "--value-file", str(blob),
           "--value-file", str(empty), "-H", "name=blob.bin"))
    # The raw value, with nothing added: a template of just %s.
    raw = ok(cli(broker.socket, "consume", topic, "--partition", "0", "--from-beginning",
                 "--max", "1", "--format", "%s"))
    assert raw == blob.read_bytes()
    lines = ok(cli(broker.socket, "consume", topic, "--from-beginning", "--exit-at-end",
                   "--format", "json")).splitlines()
    objs = [json.loads(line) for line in lines]
    assert base64.b64decode(objs[0]["value"]["base64"]) == blob.read_bytes()
    assert objs[0]["headers"] == [["name", "blob.bin"]]
    assert objs[1]["value"] == ""
    hexed = json.loads(ok(cli(broker.socket, "consume", topic, "--from-beginning", "--max", "1",
                              "--format", "json", "--binary", "hex")))
    assert bytes.fromhex(hexed["value"]["hex"]) == blob.read_bytes()


def test_json_keeps_text_as_text_and_null_as_null(broker, topic):
    with Producer(socket=broker.socket) as p:
        p.send(topic, "café".encode(), key=b"\xfe", headers=[("h", b"\x00\xff"), ("n", None)],
               partition=0)
        p.send(topic, None, partition=0)
    lines = ok(cli(broker.socket, "consume", topic, "--partition", "0", "--from-beginning",
                   "-e", "--format", "json")).splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["value"] == "café"
    assert first["key"] == {"base64": base64.b64encode(b"\xfe").decode()}
    assert first["headers"] == [["h", {"base64": "AP8="}], ["n", None]]
    assert second["value"] is None and second["key"] is None


def test_exit_at_end_reads_every_partition_to_its_end_and_exits(broker, topic):
    ok(cli(broker.socket, "produce", topic, "--partition", "0", stdin=b"a\nb\n"))
    ok(cli(broker.socket, "produce", topic, "--partition", "1", stdin=b"c\n"))
    r = cli(broker.socket, "consume", topic, "--from-beginning", "--exit-at-end")
    assert sorted(ok(r).splitlines()) == [b"a", b"b", b"c"]
    assert r.stderr == b"consumed 3 records\n"
    # From the end (the default) there is nothing left: it exits at once.
    assert ok(cli(broker.socket, "consume", topic, "-e")) == b""
    # In a group: the assignment first, then its end.
    r = cli(broker.socket, "consume", topic, "--group", "g", "--from-beginning", "-e")
    assert sorted(ok(r).splitlines()) == [b"a", b"b", b"c"]
    with Admin(socket=broker.socket) as admin:
        admin.create_topic("empty")
    assert ok(cli(broker.socket, "consume", "empty", "--from-beginning", "-e")) == b""


def test_format_template_as_kcat(broker, topic):
    with Producer(socket=broker.socket) as p:
        m1 = p.send(topic, b"v1", key=b"k", headers=[("a", b"1"), ("b", b"2")],
                    partition=1).get(10)
        m2 = p.send(topic, b"", partition=1).get(10)
    out = ok(cli(broker.socket, "consume", topic, "--partition", "1", "--from-beginning", "-e",
                 "--format", r"%t/%p@%o %T k=%k(%K) v=%s(%S) h=%h 100%%\n"))
    assert out == (f"t/1@0 {m1.timestamp} k=k(1) v=v1(2) h=a=1,b=2 100%\n"
                   f"t/1@1 {m2.timestamp} k=(-1) v=(0) h= 100%\n").encode()


@pytest.mark.parametrize(("argv", "message"), [
    (["consume", "t", "--format", "%q"], b"unknown template token %q"),
    (["consume", "t", "--format", "%s", "--print-key"], b"--print-key applies to --format text"),
    (["produce", "t", "-D", ""], b"the delimiter must not be empty"),
    (["produce", "t", "-D", r"\q"], b"unknown escape"),
    (["produce", "t", "-H", "novalue"], b"expected NAME=VALUE"),
    (["produce", "t", "--value-file", "/nonexistent/file"], b"cannot read /nonexistent/file"),
    (["produce", "t", "--key", "k", "--key-separator", ","], b"cannot be used together"),
])
def test_usage_errors(broker, argv, message):
    r = cli(broker.socket, *argv)
    assert r.returncode == 2
    assert message in r.stderr


def test_input_without_a_delimiter_is_bounded(monkeypatch):
    """Input that never has the delimiter cannot make produce hold more than one record."""
    monkeypatch.setattr(produce_cmd, "MAX_RECORD_BYTES", 1000)
    monkeypatch.setattr(produce_cmd, "READ_CHUNK", 64)
    records = produce_cmd.split_records(io.BytesIO(b"ab|" + b"x" * 5000), b"|")
    assert next(records) == b"ab"
    with pytest.raises(RecordTooLargeError, match="without the delimiter"):
        next(records)
    # A delimiter split across reads is found.
    split = produce_cmd.split_records(io.BytesIO(b"x" * 63 + b"<>y<>"), b"<>")
    assert list(split) == [b"x" * 63, b"y"]
