"""`systemctl reload edgebus` (ExecReload=/bin/kill -HUP $MAINPID) as systemd sees it: RELOADING=1
when the reload begins and READY=1 once the declared topics are applied (issue 14, item 18)."""

from __future__ import annotations

import os
import signal

import pytest
import yaml

from edgebus import Admin

pytestmark = pytest.mark.integration


def test_sighup_reports_reloading_then_ready(make_broker, notify_socket):
    b = make_broker({"topics": [{"name": "first"}]})
    b.start(env={"NOTIFY_SOCKET": notify_socket.path})
    t_ready = notify_socket.wait_for("READY=1")
    cfg = yaml.safe_load(b.config_path.read_text())
    cfg["topics"].append({"name": "second", "partitions": 2})
    b.config_path.write_text(yaml.safe_dump(cfg))

    seen: dict[str, object] = {}

    def at_ready() -> None:
        with Admin(socket=b.socket) as admin:
            seen["topics"] = sorted(admin.list_topics())

    notify_socket.on_ready = at_ready
    os.kill(b.pid, signal.SIGHUP)
    t_reloading = notify_socket.wait_for("RELOADING=1", after=t_ready)
    notify_socket.wait_for("READY=1", after=t_reloading)
    assert [m for _, m in notify_socket.lines("MONOTONIC_USEC=")]
    # READY=1 after the reload means its topics are there.
    assert seen["topics"] == ["first", "second"]
