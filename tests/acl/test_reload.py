"""Rules change while clients stay connected: `edgebus acl add|remove` edit acl.file and SIGHUP
the supervisor, and the next request of a client that is already connected (socket and rings) is
decided by the new rules (its cached decisions belong to the old ones)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edgebus import Admin, Producer
from edgebus.errors import AuthorizationError
from tests.security.conftest import CHILD_BOUND_S

pytestmark = pytest.mark.integration


def acl_cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgebus.cli.main", "acl", *args,
                           "--config", str(cfg)], capture_output=True, text=True, timeout=CHILD_BOUND_S)


def wait_reloads(admin: Admin, n: int) -> None:
    """Until the supervisor has applied `n` reloads (a SIGHUP is handled on its loop)."""
    deadline = time.monotonic() + 30
    while admin.status()["acl"]["reloads"] < n:
        assert time.monotonic() < deadline, "the supervisor did not reload"
        time.sleep(0.05)


@pytest.mark.parametrize("transport", ["socket", "shm"])
def test_sighup_applies_to_the_next_request_of_a_connected_client(make_broker: Any,
                                                                  transport: str) -> None:
    b = make_broker({"acl": {"file": "acl.yaml"}}).start()
    cfg = Path(b.config_path)
    admin = Admin(socket=b.socket)
    admin.create_topic("t")
    p = Producer(socket=b.socket, transport=transport, linger_ms=0)
    try:
        p.send("t", b"before").get(10)  # the owner may; the decision is now cached
        r = acl_cli(cfg, "add", "--deny", "user:root", "write", "topic:t")
        assert r.returncode == 0, r.stderr
        assert "the rules apply" in r.stdout
        wait_reloads(admin, 1)
        with pytest.raises(AuthorizationError, match="user:root may not write topic 't': rule "
                                                     "'deny user:root write topic:t'"):
            p.send("t", b"during").get(10)
        listed = acl_cli(cfg, "list")
        assert "deny user:root write topic:t" in listed.stdout
        r = acl_cli(cfg, "remove", "--deny", "user:root", "write", "topic:t")
        assert r.returncode == 0, r.stderr
        wait_reloads(admin, 2)
        p.send("t", b"after").get(10)  # the same producer, the same connection
        assert admin.status()["clients"], "clients stayed connected"
    finally:
        p.close()
        admin.close()


def test_acl_check_decides_offline_as_the_supervisor_would(make_broker: Any) -> None:
    b = make_broker({"acl": {"rules": ["allow user:nobody read topic:public.*",
                                       "deny user:nobody read topic:public.secret"]}})
    cfg = Path(b.config_path)
    ok = acl_cli(cfg, "check", "user:nobody", "read", "topic:public.news")
    assert ok.returncode == 0 and ok.stdout.startswith("ALLOW") and "rule 'allow" in ok.stdout
    no = acl_cli(cfg, "check", "user:nobody", "read", "topic:public.secret")
    assert no.returncode == 3 and no.stdout.startswith("DENY") and "rule 'deny" in no.stdout
    no = acl_cli(cfg, "check", "user:nobody", "write", "topic:public.news")
    assert no.returncode == 3 and "default policy owner" in no.stdout
    root = acl_cli(cfg, "check", "user:root", "delete", "topic:anything")
    assert root.returncode == 0 and "default policy owner" in root.stdout
    bad = acl_cli(cfg, "add", "user:nobody", "read", "topic:x")
    assert bad.returncode == 78 and "names no acl.file" in bad.stderr


@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_a_reload_stops_a_standing_fetch(make_broker: Any, transport: str) -> None:
    """A consumer (on the rings or the socket) keeps one fetch armed that the supervisor re-arms
    after each answer (FETCH_STANDING): no request of the consumer's follows, so each re-armed
    fetch is checked again, and a reload that takes the read away stops the next answer."""
    from edgebus import Consumer

    b = make_broker({"acl": {"file": "acl.yaml"}}).start()
    cfg = Path(b.config_path)
    admin = Admin(socket=b.socket)
    admin.create_topic("t")
    p = Producer(socket=b.socket, linger_ms=0)
    c = Consumer("t", socket=b.socket, transport=transport, auto_offset_reset="earliest")
    try:
        p.send("t", b"before").get(10)
        got: list[bytes] = []
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            got += [r.value for recs in c.poll(200).values() for r in recs]
        assert got == [b"before"]
        r = acl_cli(cfg, "add", "--deny", "user:root", "read", "topic:t")
        assert r.returncode == 0, r.stderr
        wait_reloads(admin, 1)
        p.send("t", b"after the reload").get(10)
        with pytest.raises(AuthorizationError, match="may not read topic 't'"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for recs in c.poll(200).values():
                    got += [r.value for r in recs]
        assert got == [b"before"], "nothing was delivered after the reload took the read away"
    finally:
        c.close()
        p.close()
        admin.close()
