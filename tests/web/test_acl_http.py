"""HTTP requests pass the supervisor's access control like socket requests (docs/SECURITY.md):
a user of http.users_file is the principal sasl:NAME. Runs where access control is built (the
`acl` branch, edgebus/server/acl/); skipped before."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from .conftest import Http, error_of

pytest.importorskip("edgebus.server.acl", reason="access control (edgebus/server/acl) is not in this tree")
pytestmark = pytest.mark.integration
SECRET = "kitchen-secret-0123456789"
ADMIN = "admin-secret-0123456789ab"


def test_http_users_are_principals_checked_by_the_rules(make_broker: Any, tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(f"kitchen: {SECRET}\nops: {ADMIN}\n")
    os.chmod(users, 0o600)
    port = make_broker({
        "topics": [{"name": "teapot.temperature"}, {"name": "payroll"}],
        "acl": {"default": "owner", "rules": [
            "allow sasl:kitchen read,describe topic:teapot.*",
            "allow sasl:ops admin cluster"]},
        "http": {"enabled": True, "listen": "127.0.0.1:0", "users_file": str(users)},
    }).start().http_port
    kitchen = Http(port, user="kitchen", secret=SECRET)
    ops = Http(port, user="ops", secret=ADMIN)
    assert ops.ok("POST", "/api/topics/teapot.temperature/records", {"value": "97"})["offsets"]
    assert [t["name"] for t in kitchen.ok("GET", "/api/topics")["topics"]] == ["teapot.temperature"]
    got = kitchen.ok("GET", "/api/topics/teapot.temperature/records?offset=0")
    assert [r["value"] for r in got["records"]] == ["97"]
    code, _, doc = kitchen.post("/api/topics/teapot.temperature/records", {"value": "x"})
    assert code == 403 and error_of(doc)[0] == 50 and "sasl:kitchen" in doc["error"]["message"]
    code, _, doc = kitchen.get("/api/topics/payroll/records?offset=0")
    assert code == 403 and error_of(doc)[0] == 50
    assert kitchen.get("/api/status")[0] == 403
    assert kitchen.request("DELETE", "/api/topics/teapot.temperature")[0] == 403
    # the same keep-alive connection, another user: decisions are not carried over
    both = Http(port, user="ops", secret=ADMIN)
    assert both.get("/api/status")[0] == 200
    both.auth = Http(port, user="kitchen", secret=SECRET).auth
    assert both.get("/api/status")[0] == 403
