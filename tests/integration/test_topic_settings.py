"""Creating a topic that may exist (issue 14, item 11) and changing a topic's settings: Admin,
the CLI, and the config file reloaded on SIGHUP (item 18). Real supervisor, real CLI processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgebus import Admin, Producer
from edgebus.errors import (
    InvalidRequestError,
    InvalidTopicError,
    RecordTooLargeError,
    TopicExistsError,
    UnknownTopicError,
)
from edgebus.testing import wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DAY_MS = 86_400_000


def cli(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgebus.cli.main", *args, "--socket", sock],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def settings(admin: Admin, topic: str) -> dict[str, str]:
    return {e.name: e.value for e in admin.describe_topic(topic).configs}


# --- item 11: create if it does not exist ---------------------------------------------------------

def test_create_topic_exist_ok_leaves_the_existing_topic_alone(broker):
    with Admin(socket=broker.socket) as admin:
        assert admin.create_topic("t", partitions=2, config={"retention_ms": DAY_MS}) is True
        with pytest.raises(TopicExistsError):
            admin.create_topic("t", partitions=2)
        assert admin.create_topic("t", partitions=5, exist_ok=True) is False
        meta = admin.describe_topic("t")
        assert len(meta.partitions) == 2
        assert settings(admin, "t")["retention_ms"] == str(DAY_MS)


def test_cli_create_if_not_exists(broker):
    first = cli(broker.socket, "topics", "create", "t", "--partitions", "2", "--if-not-exists")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "created topic t"
    again = cli(broker.socket, "topics", "create", "t", "--if-not-exists")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "topic t exists already"
    plain = cli(broker.socket, "topics", "create", "t")
    assert plain.returncode == 1
    assert "already exists" in plain.stderr


def test_cli_create_accepts_the_word_setting_on_disk_full(broker):
    """The README's `--config on_disk_full=drop-oldest` was refused as "expected a number"."""
    r = cli(broker.socket, "topics", "create", "sensors", "--config", "on_disk_full=drop-oldest")
    assert r.returncode == 0, r.stderr
    with Admin(socket=broker.socket) as admin:
        assert settings(admin, "sensors")["on_disk_full"] == "drop-oldest"


# --- item 18: Admin.alter_topic_config and `edgebus topics alter` -----------------------------------

def test_alter_applies_at_once_and_survives_a_restart(broker):
    with Admin(socket=broker.socket) as admin:
        admin.create_topic("t", partitions=2)
    with Producer(socket=broker.socket, linger_ms=0) as p:
        p.send("t", b"x" * 3000, partition=0).get(10)
        with Admin(socket=broker.socket) as admin:
            after = admin.alter_topic_config("t", {"max_message_bytes": 2048,
                                                   "retention.ms": DAY_MS})
            assert after["max_message_bytes"] == "2048"
            assert after["retention_ms"] == str(DAY_MS)
            assert after["partitions"] == "2"
            assert settings(admin, "t") == after
        with pytest.raises(RecordTooLargeError):
            p.send("t", b"x" * 3000, partition=0).get(10)
        p.send("t", b"small", partition=0).get(10)
    broker.restart()
    with Admin(socket=broker.socket) as admin:
        kept = settings(admin, "t")
        assert kept["max_message_bytes"] == "2048"
        assert kept["retention_ms"] == str(DAY_MS)
        assert kept["segment_bytes"] == str(64 * 1024 * 1024)  # untouched settings stay


def test_a_lower_retention_deletes_old_segments_of_a_running_topic(make_broker):
    b = make_broker({"log": {"retention_check_interval_ms": 200}}).start()
    with Admin(socket=b.socket) as admin:
        admin.create_topic("t", partitions=1, config={"segment_bytes": 1024})
        with Producer(socket=b.socket, linger_ms=0) as p:
            for i in range(20):
                p.send("t", b"%04d" % i + b"." * 200).get(10)
        time.sleep(0.6)  # a few retention checks: 7 days keeps everything
        assert admin.describe_topic("t").partitions[0].log_start_offset == 0
        admin.alter_topic_config("t", {"retention_ms": 1})
        wait_for(lambda: admin.describe_topic("t").partitions[0].log_start_offset > 0, 30,
                 "retention to apply the new retention_ms")


def test_bad_alterations_are_typed_errors(broker):
    with Admin(socket=broker.socket) as admin:
        admin.create_topic("t", partitions=2)
        with pytest.raises(InvalidRequestError, match="partition count"):
            admin.alter_topic_config("t", {"partitions": 4})
        with pytest.raises(InvalidRequestError, match="unknown topic config key 'retention'"):
            admin.alter_topic_config("t", {"retention": 5})
        with pytest.raises(InvalidRequestError, match="segment_bytes"):
            admin.alter_topic_config("t", {"segment_bytes": 1})
        with pytest.raises(InvalidRequestError, match="no setting"):
            admin.alter_topic_config("t", {})
        with pytest.raises(UnknownTopicError):
            admin.alter_topic_config("nope", {"retention_ms": 1})
        with pytest.raises(InvalidTopicError):
            admin.alter_topic_config("__consumer_offsets", {"retention_ms": 1})
        assert settings(admin, "t")["partitions"] == "2"


def test_cli_alter(broker):
    with Admin(socket=broker.socket) as admin:
        admin.create_topic("t")
    r = cli(broker.socket, "topics", "alter", "t", "--config", "retention_ms=1d",
            "--config", "on_disk_full=drop-oldest")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"altered topic t: retention_ms = {DAY_MS}, on_disk_full = drop-oldest"
    with Admin(socket=broker.socket) as admin:
        got = settings(admin, "t")
    assert got["retention_ms"] == str(DAY_MS) and got["on_disk_full"] == "drop-oldest"
    missing = cli(broker.socket, "topics", "alter", "t")
    assert missing.returncode == 2 and "--config" in missing.stderr
    bad = cli(broker.socket, "topics", "alter", "t", "--config", "partitions=3")
    assert bad.returncode == 2 and "partitions" in bad.stderr


# --- item 18: the config file reloaded on SIGHUP ---------------------------------------------------

def write_config(broker, topics: list[dict[str, Any]], **extra: Any) -> None:
    cfg = yaml.safe_load(broker.config_path.read_text())
    cfg.update(extra, topics=topics)
    broker.config_path.write_text(yaml.safe_dump(cfg))


def test_sighup_reloads_the_declared_topics(broker):
    write_config(broker, [{"name": "declared", "retention_ms": "7d", "partitions": 2}])
    broker.restart()
    with Admin(socket=broker.socket) as admin:
        assert settings(admin, "declared")["retention_ms"] == str(7 * DAY_MS)
        write_config(broker, [{"name": "declared", "retention_ms": "1d", "partitions": 3},
                              {"name": "added", "segment_bytes": "1MiB"}])
        os.kill(broker.pid, signal.SIGHUP)
        wait_for(lambda: "added" in admin.list_topics(), 30, "the reload to create 'added'")
        assert settings(admin, "declared")["retention_ms"] == str(DAY_MS)
        assert settings(admin, "added")["segment_bytes"] == str(1024 * 1024)
        assert len(admin.describe_topic("declared").partitions) == 2  # a count cannot change
        assert "the partition count cannot be changed" in broker.log()

        # A broken file changes nothing, and the supervisor keeps serving.
        good = broker.config_path.read_text()
        broker.config_path.write_text(good + "retenton: 1\n")
        os.kill(broker.pid, signal.SIGHUP)
        wait_for(lambda: "the running configuration is kept" in broker.log(), 30,
                 "the reload to report the broken file")
        assert broker.proc.poll() is None
        assert settings(admin, "declared")["retention_ms"] == str(DAY_MS)
    broker.config_path.write_text(good)
    broker.restart()  # topics.json kept what the reload applied
    with Admin(socket=broker.socket) as admin:
        assert settings(admin, "declared")["retention_ms"] == str(DAY_MS)


def test_a_restart_applies_the_declared_settings_like_a_reload(broker):
    write_config(broker, [{"name": "declared", "max_message_bytes": "64KiB"}])
    broker.restart()
    write_config(broker, [{"name": "declared", "max_message_bytes": "128KiB"}])
    broker.restart()
    with Admin(socket=broker.socket) as admin:
        assert settings(admin, "declared")["max_message_bytes"] == str(128 * 1024)


def test_the_unit_reloads_with_sighup():
    text = (ROOT / "systemd" / "edgebus.service").read_text()
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", text, re.M)
