"""A reload ends the live tails it takes away (edgebus/server/http/revoke.py): the stream of a
user removed from http.users_file, and a stream whose user may no longer read its topic after
the access rules were reloaded, each get an `error` event saying why and end; other streams go
on. Real supervisor, real SIGHUP (`edgebus reload`), real HTTP streams."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgebus import Admin, Producer

from .sse import SseClient

pytestmark = pytest.mark.integration
ALICE, BOB = "alice-secret-0123456789", "bob-secret-0123456789ab"


def tail(port: int, topic: str, user: str, secret: str) -> SseClient:
    """An event stream of `topic` opened with a user's basic credentials."""
    cred = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return SseClient(port, f"/api/topics/{topic}/tail", authorization=f"Basic {cred}")


def secret_file(path: Path, doc: dict[str, str]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def reload(b: Any) -> None:
    r = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "reload", "--socket", b.socket],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def produce(b: Any, topic: str, value: bytes) -> None:
    with Producer(socket=b.socket) as p:  # the owner (this test's user) may write anything
        p.send(topic, value).get(10)


def record_value(ev: dict[str, str]) -> str:
    assert ev.get("event") == "record", ev
    return str(json.loads(ev["data"])["value"])


def start(make_broker: Callable[..., Any], tmp_path: Path, rules: list[str],
          topics: list[str]) -> tuple[Any, Path]:
    users = secret_file(tmp_path / "users.yaml", {"alice": ALICE, "bob": BOB})
    b = make_broker({"http": {"enabled": True, "listen": "127.0.0.1:0", "users_file": str(users)},
                     "acl": {"default": "owner", "rules": rules}}).start()
    with Admin(socket=b.socket) as a:
        for t in topics:
            a.create_topic(t, 1)
    return b, users


def test_a_removed_users_stream_ends_at_the_reload(make_broker: Callable[..., Any],
                                                    tmp_path: Path) -> None:
    b, users = start(make_broker, tmp_path, ["allow sasl:alice read,describe topic:tele",
                                             "allow sasl:bob read,describe topic:tele"], ["tele"])
    alice, bob = tail(b.http_port, "tele", "alice", ALICE), tail(b.http_port, "tele", "bob", BOB)
    try:
        produce(b, "tele", b"one")
        assert record_value(alice.next_event()) == "one"
        assert record_value(bob.next_event()) == "one"
        secret_file(users, {"bob": BOB})
        reload(b)
        produce(b, "tele", b"two")  # would reach alice's stream if it had not ended
        ev = alice.next_event()
        assert ev.get("event") == "error", ev
        doc = json.loads(ev["data"])
        assert doc["code"] == 44 and "'alice' is no longer in http.users_file" in doc["message"]
        assert alice.ended()
        assert record_value(bob.next_event()) == "two"  # bob's stream goes on
    finally:
        alice.close()
        bob.close()


def test_a_stream_no_longer_allowed_ends_at_an_acl_reload(make_broker: Callable[..., Any],
                                                          tmp_path: Path) -> None:
    b, _ = start(make_broker, tmp_path, ["allow sasl:alice read,describe topic:tele.*"],
                 ["tele.keep", "tele.drop"])
    keep = tail(b.http_port, "tele.keep", "alice", ALICE)
    drop = tail(b.http_port, "tele.drop", "alice", ALICE)
    try:
        produce(b, "tele.drop", b"one")
        assert record_value(drop.next_event()) == "one"
        cfg = Path(b.config_path)
        doc = yaml.safe_load(cfg.read_text())
        doc["acl"]["rules"] = ["allow sasl:alice read,describe topic:tele.keep"]
        cfg.write_text(yaml.safe_dump(doc))
        reload(b)
        produce(b, "tele.drop", b"two")  # alice may no longer read it: never sent
        produce(b, "tele.keep", b"kept")
        ev = drop.next_event()
        assert ev.get("event") == "error", ev
        err = json.loads(ev["data"])
        assert err["code"] == 50 and "sasl:alice may no longer read topic 'tele.drop'" in err["message"]
        assert drop.ended()
        assert record_value(keep.next_event()) == "kept"
    finally:
        keep.close()
        drop.close()
