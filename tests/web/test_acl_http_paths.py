"""The HTTP routes test_acl_http.py does not reach pass the same access check: the live tail
(Server-Sent Events), the groups (list, describe, reset) and topic creation and alteration. An
HTTP user is the principal sasl:NAME (docs/HTTP.md, docs/SECURITY.md)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from edgebus import Consumer

from .conftest import Http, error_of
from .sse import SseClient

pytestmark = pytest.mark.integration
KITCHEN = "kitchen-secret-0123456789"
OPS = "ops-secret-0123456789abcd"
TOPIC = "teapot.temperature"


def refused(resp: tuple[int, dict[str, str], Any], who: str = "sasl:kitchen") -> bool:
    code, _, doc = resp
    return code == 403 and error_of(doc)[0] == 50 and who in doc["error"]["message"]


def test_tail_groups_and_topic_changes_are_checked_per_user(make_broker: Any, tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(f"kitchen: {KITCHEN}\nops: {OPS}\n")
    os.chmod(users, 0o600)
    b = make_broker({
        "topics": [{"name": TOPIC}, {"name": "payroll"}],
        "acl": {"default": "owner", "rules": [
            "allow sasl:kitchen read,describe topic:teapot.*",
            "allow sasl:kitchen describe group:kitchen-*",
            "allow sasl:ops admin cluster"]},
        "http": {"enabled": True, "listen": "127.0.0.1:0", "users_file": str(users)},
    }).start()
    port = b.http_port
    kitchen = Http(port, user="kitchen", secret=KITCHEN)
    ops = Http(port, user="ops", secret=OPS)
    ops.ok("POST", f"/api/topics/{TOPIC}/records", {"value": "97"})
    ops.ok("POST", "/api/topics/payroll/records", {"value": "secret"})
    # two groups with commits, by the supervisor's own user (the socket client)
    for group, topic in (("kitchen-display", TOPIC), ("accounts", "payroll")):
        with Consumer(topic, group_id=group, socket=b.socket, auto_offset_reset="earliest") as c:
            while not c.poll(timeout_ms=2000):
                pass
            c.commit()

    # the live tail: a topic the user may read streams, another is refused before any event
    basic = "Basic " + base64.b64encode(f"kitchen:{KITCHEN}".encode()).decode()
    code, _, doc = kitchen.get("/api/topics/payroll/tail?from=earliest")
    assert code == 403 and error_of(doc)[0] == 50, (code, doc)
    stream = SseClient(port, f"/api/topics/{TOPIC}/tail?from=earliest", authorization=basic)
    first = next(ev for ev in stream.events() if ev.get("event") == "record")
    assert json.loads(first["data"])["value"] == "97"
    stream.close()

    # groups: the list shows what the user may describe; the others are refused
    listed = [g["group"] for g in kitchen.ok("GET", "/api/groups")["groups"]]
    assert listed == ["kitchen-display"]
    assert kitchen.ok("GET", "/api/groups/kitchen-display")["partitions"][0]["committed"] == 1
    assert refused(kitchen.get("/api/groups/accounts"))
    # a reset needs read on the group (describe is not enough)
    assert refused(kitchen.post("/api/groups/kitchen-display/reset", {"topic": TOPIC, "to": "earliest"}))
    assert sorted(g["group"] for g in ops.ok("GET", "/api/groups")["groups"]) == ["accounts",
                                                                                   "kitchen-display"]
    ops.ok("POST", "/api/groups/accounts/reset", {"topic": "payroll", "to": "earliest"})

    # topic changes
    assert refused(kitchen.post("/api/topics", {"name": "teapot.new"}))
    assert refused(kitchen.request("PATCH", f"/api/topics/{TOPIC}", {"configs": {"retention_ms": "1h"}}))
    assert ops.ok("POST", "/api/topics", {"name": "teapot.new"}, status=201)["name"] == "teapot.new"
    ops.ok("PATCH", "/api/topics/teapot.new", {"configs": {"retention_ms": "1h"}})
    for c in (kitchen, ops):
        c.close()



def test_every_get_route_needs_only_read_rights(make_broker: Any, tmp_path: Path) -> None:
    """No GET changes anything (CSRF, docs/HTTP.md "Security"): every GET route the server has
    answers a user who may only read, describe and see the status, since a state change would
    need a right this user lacks. New GET routes are covered by reading the route table."""
    from edgebus.server.http.api import App
    from edgebus.server.http.auth import Authenticator

    users = tmp_path / "users.yaml"
    users.write_text(f"kitchen: {KITCHEN}\n")
    os.chmod(users, 0o600)
    b = make_broker({
        "topics": [{"name": TOPIC}],
        "acl": {"default": "owner", "rules": [
            "allow sasl:kitchen read,describe topic:*", "allow sasl:kitchen describe group:*",
            "allow sasl:kitchen status cluster"]},
        "http": {"enabled": True, "listen": "127.0.0.1:0", "users_file": str(users)},
    }).start()
    with Consumer(TOPIC, group_id="kitchen-display", socket=b.socket) as c:
        c.poll(timeout_ms=100)
        c.commit()
    kitchen = Http(b.http_port, user="kitchen", secret=KITCHEN)
    values = {"topic": TOPIC, "group": "kitchen-display", "file": "console.js"}
    gets = [t for m, _, t, _ in App(Authenticator({})).routes if m == "GET"]
    assert len(gets) >= 9
    basic = "Basic " + base64.b64encode(f"kitchen:{KITCHEN}".encode()).decode()
    for template in gets:
        path = template.format(**values)
        if template.endswith("/tail"):  # a stream: its answer's head is what counts
            SseClient(b.http_port, path, authorization=basic).close()
            continue
        code, _, doc = kitchen.get(path)
        assert code == 200, (template, code, doc)
    kitchen.close()
