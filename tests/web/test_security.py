"""Who may use the HTTP listener: loopback only without authentication; anything else needs TLS
and a users file (refused at start otherwise); tokens and HTTP basic against a real supervisor."""

from __future__ import annotations

import importlib.util
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgebus.config import config_from_mapping
from edgebus.errors import ConfigError
from edgebus.server.http.auth import is_loopback_host

from .conftest import Http, error_of

pytestmark = pytest.mark.integration
SECRET = "kitchen-secret-0123456789"
TOKEN = "program-token-0123456789"


@pytest.mark.parametrize("http,missing", [
    ({"enabled": True, "listen": "0.0.0.0:8470"}, "http.tls_cert, http.tls_key, http.users_file"),
    ({"enabled": True, "listen": "192.168.1.5:8470", "users_file": "u.yaml"}, "http.tls_cert, http.tls_key"),
    ({"enabled": True, "listen": "[::]:8470", "tls_cert": "c.pem", "tls_key": "k.pem"}, "http.users_file"),
])
def test_a_non_loopback_address_needs_tls_and_authentication(http: dict[str, Any], missing: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_mapping({"http": http})
    assert "not a loopback address" in str(e.value) and missing in str(e.value)


def test_config_defaults_and_checks() -> None:
    c = config_from_mapping(None)
    assert not c.http.enabled and c.http.listen == "127.0.0.1:8470"
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        config_from_mapping({"http": {"tls_cert": "c.pem"}})
    with pytest.raises(ConfigError, match="expected true or false"):
        config_from_mapping({"http": {"enabled": "yes"}})


def test_the_supervisor_refuses_to_start_with_an_open_console(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'd'}\nsocket: {tmp_path / 's.sock'}\n"
                   "http: {enabled: true, listen: '0.0.0.0:8470'}\n")
    r = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "serve", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "not a loopback address" in r.stderr and "http.users_file" in r.stderr
    assert not (tmp_path / "d").exists()  # refused before touching anything


def test_a_users_file_readable_by_others_is_refused(make_broker: Any, tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(f"kitchen: {SECRET}\n")
    os.chmod(users, 0o644)
    b = make_broker({"http": {"enabled": True, "listen": "127.0.0.1:0",
                              "users_file": str(users)}})
    with pytest.raises(RuntimeError, match="chmod 0600"):
        b.start()


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    p = tmp_path / "users.yaml"
    p.write_text(f"kitchen: {SECRET}\nscripts: {TOKEN}\n")
    os.chmod(p, 0o600)
    return p


def open_policy() -> dict[str, Any]:
    """Where access control is built (edgebus/server/acl), let every authenticated user do
    everything: these tests are about authentication (test_acl_http.py is about the rules)."""
    return {"acl": {"default": "allow"}} if importlib.util.find_spec("edgebus.server.acl") else {}


def _check_auth(port: int, **kw: Any) -> None:
    code, hdrs, doc = Http(port, **kw).get("/api/topics")
    assert code == 401 and hdrs["www-authenticate"].startswith("Basic") and error_of(doc)[0] == 44
    code, _, doc = Http(port, user="kitchen", secret="wrong-secret-000000", **kw).get("/api/topics")
    assert code == 401 and "wrong user or secret" in doc["error"]["message"]
    code, _, doc = Http(port, user="nobody", secret=SECRET, **kw).get("/api/topics")
    assert code == 401
    assert Http(port, user="kitchen", secret=SECRET, **kw).get("/api/topics")[0] == 200
    assert Http(port, token=TOKEN, **kw).ok("POST", "/api/topics", {"name": "by-token"}, status=201)
    # the console page itself is behind the login too (a browser shows its prompt)
    assert Http(port, **kw).get("/")[0] == 401


def test_tokens_and_basic_users(make_broker: Any, users_file: Path) -> None:
    port = make_broker({"http": {"enabled": True, "listen": "127.0.0.1:0",
                                 "users_file": str(users_file)}, **open_policy()}).start().http_port
    _check_auth(port)
    # with authentication, any Host name is fine (a phone uses the gateway's address)
    assert Http(port, token=TOKEN).get("/api/topics", headers={"Host": "gw.local:8470"})[0] == 200


def test_tls_with_authentication(make_broker: Any, users_file: Path, tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "gw.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "gw.key"))
    port = make_broker({"http": {"enabled": True, "listen": "127.0.0.1:0", "users_file": str(users_file),
                                 "tls_cert": str(tmp_path / "gw.pem"), "tls_key": str(tmp_path / "gw.key")},
                        **open_policy()}).start().http_port
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    _check_auth(port, context=ctx)
    # a plain-HTTP request to the TLS port gets nothing served
    with pytest.raises((ConnectionError, OSError)):
        Http(port).get("/api/topics")


def test_loopback_host_names() -> None:
    for ok in ("localhost", "localhost:8470", "127.0.0.1:1", "[::1]:8470", "127.5.5.5"):
        assert is_loopback_host(ok)
    for bad in ("evil.example", "192.168.1.2:8470", "[2001:db8::1]:80", "", "localhost.evil.example"):
        assert not is_loopback_host(bad)


def test_a_port_in_use_stops_the_start_with_a_clear_message(make_broker: Any) -> None:
    port = make_broker({"http": {"enabled": True, "listen": "127.0.0.1:0"}}, name="first").start().http_port
    second = make_broker({"http": {"enabled": True, "listen": f"127.0.0.1:{port}"}}, name="second")
    with pytest.raises(RuntimeError, match=r"already in use by another process"):
        second.start()
    assert not second.socket or not os.path.exists(second.socket)  # it never served
