"""Small things a user trial found in the CLI's output: each run as a user runs it, the real CLI
in its own process against a real supervisor (and a real confluent-kafka consumer)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgebus import Admin
from edgebus.errors import UnknownGroupError
from edgebus.testing import EmbeddedBroker

pytestmark = pytest.mark.integration


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgebus.cli.main", *args],
                          capture_output=True, text=True, timeout=60)


def test_topics_describe_leaves_out_the_mirror_of_an_ordinary_topic(broker: EmbeddedBroker) -> None:
    with Admin(socket=broker.socket) as a:
        a.create_topic("plain-topic", 1)
    r = cli("topics", "describe", "plain-topic", "--socket", broker.socket)
    assert r.returncode == 0, r.stderr
    assert "  retention_ms = " in r.stdout  # the settings are listed ...
    assert "mirror_of" not in r.stdout  # ... but not the source a mirror would have


@pytest.mark.parametrize("doc, message", [
    ({"node": "gw", "linkz": []}, "linkz: unknown key (did you mean 'links'?)"),
    ({"node": "gw", "links": [{"name": "b", "target": "peer", "adress": "127.0.0.1:9"}]},
     "links[0].adress: unknown key (did you mean 'address'?)"),
])
def test_the_replicator_config_suggests_the_close_key(tmp_path: Path, doc: dict[str, Any],
                                                      message: str) -> None:
    cfg = tmp_path / "replicate.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    r = cli("replicate", "--config", str(cfg), "--check")
    assert r.returncode == 78, r.stdout + r.stderr
    assert message in r.stderr
    assert "known keys" not in r.stderr  # the one close key, not the whole list


KAFKA_CONSUMER = r"""
import sys
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
              "client.id": "kettle-reader", "auto.offset.reset": "earliest"})
c.subscribe(["kt"])
while True:
    c.poll(0.1)
"""


def _members(admin: Admin, group: str) -> list[Any]:
    try:
        return list(admin.describe_group(group).members)
    except UnknownGroupError:  # not joined yet
        return []


def test_groups_describe_names_a_kafka_member_without_a_pid(broker: EmbeddedBroker) -> None:
    pytest.importorskip("confluent_kafka")
    with Admin(socket=broker.socket) as a:
        a.create_topic("kt", 1)
    group = f"kafka-readers-{os.getpid()}"
    proc = subprocess.Popen([sys.executable, "-c", KAFKA_CONSUMER, broker.kafka_bootstrap, group])
    try:
        with Admin(socket=broker.socket) as a:
            deadline = time.monotonic() + 60
            while not _members(a, group):
                assert proc.poll() is None, "the Kafka consumer exited"
                assert time.monotonic() < deadline, "the Kafka consumer did not join"
                time.sleep(0.1)
        r = cli("groups", "describe", group, "--socket", broker.socket)
        assert r.returncode == 0, r.stderr
        row = next(line for line in r.stdout.splitlines() if "kettle-reader" in line)
        assert "kafka client" in row and " -1 " not in row, r.stdout
        js = json.loads(cli("groups", "describe", group, "--json", "--socket", broker.socket).stdout)
        assert [m["pid"] for m in js["members"]] == [None]
    finally:
        proc.kill()
        proc.wait()


def test_acl_add_reports_a_reload_that_failed(make_broker: Any, tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(yaml.safe_dump({"alice": "the-first-secret-of-alice"}))
    users.chmod(0o600)
    b = make_broker({"acl": {"file": "acl.yaml"},
                     "http": {"enabled": True, "listen": "127.0.0.1:0",
                              "users_file": str(users)}}).start()
    cfg = Path(b.config_path)
    users.chmod(0o644)  # the supervisor refuses a secrets file others may read: no reload
    r = cli("acl", "add", "--deny", "user:nobody", "write", "topic:t", "--config", str(cfg))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"the supervisor (pid {b.pid}) did not apply" in r.stderr
    assert "http.users_file" in r.stderr and "keeps its running rules" in r.stderr
    users.chmod(0o600)
    r = cli("acl", "remove", "--deny", "user:nobody", "write", "topic:t", "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"the supervisor (pid {b.pid}) reloaded" in r.stdout and "the rules apply" in r.stdout
    with Admin(socket=b.socket) as a:
        assert not a.status()["reload"]["last_error"]
