"""A reload names every changed setting it cannot apply, applies the secrets files of the
listeners that run, and keeps the running configuration when the file does not load.

Real supervisor, real SIGHUP (sent by the `edgebus reload` CLI, a real process, or by os.kill),
real HTTP requests and real replica links."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgebus import Admin, ReplicaLink
from edgebus.errors import AuthenticationError, BrokerUnavailableError, EdgebusError
from edgebus.testing import EmbeddedBroker, wait_for

pytestmark = pytest.mark.integration

OLD_SECRET = "the-first-secret-of-alice"
NEW_SECRET = "the-second-secret-of-alice"
NODE, OLD_TOKEN, NEW_TOKEN = "gw-peer", "first-token-of-the-peer-node", "second-token-of-the-peer"


def secret_file(path: Path, doc: dict[str, str]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def cli(socket: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgebus.cli.main", *args, "--socket", socket],
                          capture_output=True, text=True, timeout=60)


def edit(cfg: Path, change: Any) -> None:
    doc = yaml.safe_load(cfg.read_text())
    change(doc)
    cfg.write_text(yaml.safe_dump(doc))


def http_status(address: str, secret: str) -> int:
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/api/topics", headers={"Authorization": f"Bearer {secret}"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_reload_names_what_waits_for_a_restart_and_applies_the_secrets(make_broker: Any,
                                                                      tmp_path: Path) -> None:
    users = secret_file(tmp_path / "users.yaml", {"alice": OLD_SECRET})
    tokens = secret_file(tmp_path / "tokens.yaml", {NODE: OLD_TOKEN})
    b = make_broker({"http": {"enabled": True, "listen": "127.0.0.1:0", "users_file": str(users)},
                     "replica": {"listen": "127.0.0.1:0", "tokens_file": str(tokens)}}).start()
    cfg = Path(b.config_path)
    address = b.http_address
    assert http_status(address, OLD_SECRET) == 200
    link = ReplicaLink(b.replica_address, NODE, OLD_TOKEN)
    assert link.describe("nothing-here") is None  # admitted and answered

    # Restart-only settings of http:, replica: and kafka: change; so do both secrets files.
    def change(doc: dict[str, Any]) -> None:
        doc["http"]["max_connections"] = 7
        doc["replica"]["link_idle_timeout_ms"] = 45_000
        doc["kafka"]["advertised"] = "127.0.0.1:19092"
    edit(cfg, change)
    secret_file(users, {"alice": NEW_SECRET})
    secret_file(tokens, {NODE: NEW_TOKEN})
    r = cli(b.socket, "reload")
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"reloaded {cfg}" in r.stdout
    for line in ("http.max_connections: 32 -> 7", "replica.link_idle_timeout_ms: 30000 -> 45000",
                 "kafka.advertised: null -> 127.0.0.1:19092"):
        assert line in r.stdout, r.stdout
    assert "users_file" not in r.stdout and "tokens_file" not in r.stdout  # applied, not pending
    assert ("reload: replica.link_idle_timeout_ms (30000 -> 45000), http.max_connections "
            "(32 -> 7), kafka.advertised (null -> 127.0.0.1:19092) changed in") in b.log()
    st = cli(b.socket, "status")
    assert st.returncode == 0, st.stderr
    assert "PENDING RESTART: replica.link_idle_timeout_ms (30000 -> 45000)" in st.stdout
    # The new HTTP secret from the next request; the old one no longer works.
    assert http_status(address, NEW_SECRET) == 200
    assert http_status(address, OLD_SECRET) == 401
    # The link admitted with the revoked token was closed; the old token no longer gets in.
    with pytest.raises((BrokerUnavailableError, EdgebusError)):
        link.describe("nothing-here")
    link.close()
    with pytest.raises(AuthenticationError, match="replica link refused"):
        ReplicaLink(b.replica_address, NODE, OLD_TOKEN)
    with ReplicaLink(b.replica_address, NODE, NEW_TOKEN) as again:
        assert again.describe("nothing-here") is None

    # The changes undone in the file: nothing waits any more.
    def undo(doc: dict[str, Any]) -> None:
        del doc["http"]["max_connections"], doc["replica"]["link_idle_timeout_ms"]
        del doc["kafka"]["advertised"]
    edit(cfg, undo)
    r = cli(b.socket, "reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wait for a restart" not in r.stdout
    with Admin(socket=b.socket) as admin:
        rl = admin.status()["reload"]
    assert rl["pending_restart"] == {} and rl["reloads"] == 2 and rl["last_error"] is None


def test_a_file_that_does_not_load_keeps_the_running_configuration(make_broker: Any,
                                                                  tmp_path: Path) -> None:
    users = secret_file(tmp_path / "users.yaml", {"alice": OLD_SECRET})
    b = make_broker({"http": {"enabled": True, "listen": "127.0.0.1:0",
                              "users_file": str(users)}}).start()
    cfg = Path(b.config_path)
    address = b.http_address
    good = cfg.read_text()
    cfg.write_text(good + "limits:\n  max_conections: 5\n")  # a misspelt key
    r = cli(b.socket, "reload")
    assert r.returncode == 1
    assert "limits.max_conections" in r.stderr and "the running configuration is kept" in r.stderr
    st = cli(b.socket, "status")
    assert "LAST RELOAD FAILED (running configuration kept)" in st.stdout
    assert "max_conections" in st.stdout
    # A secrets file that others may read fails the whole reload too: nothing is applied.
    cfg.write_text(good)
    secret_file(users, {"alice": NEW_SECRET})
    users.chmod(0o644)
    os.kill(b.pid, signal.SIGHUP)
    with Admin(socket=b.socket) as admin:
        wait_for(lambda: admin.status()["reload"]["attempts"] == 2, 30, "the second reload")
        rl = admin.status()["reload"]
    assert rl["reloads"] == 0 and "http.users_file" in rl["last_error"]
    assert http_status(address, OLD_SECRET) == 200  # the users read at the start still apply
    assert http_status(address, NEW_SECRET) == 401
    users.chmod(0o600)
    r = cli(b.socket, "reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert http_status(address, NEW_SECRET) == 200


def test_a_reload_without_listeners_reports_their_changes(make_broker: Any, tmp_path: Path) -> None:
    """With no HTTP listener running, http.users_file has nothing to apply to: a restart (that
    also starts the listener) applies it; acl.enabled and the data directory likewise."""
    b = make_broker().start()
    cfg = Path(b.config_path)
    users = secret_file(tmp_path / "users.yaml", {"alice": OLD_SECRET})

    def change(doc: dict[str, Any]) -> None:
        doc["http"] = {"enabled": True, "users_file": str(users)}
        doc["acl"] = {"enabled": False}
        doc["data_dir"] = str(tmp_path / "elsewhere")
    edit(cfg, change)
    r = cli(b.socket, "reload")
    assert r.returncode == 3, r.stdout + r.stderr
    for key in ("data_dir:", "http.enabled: False -> True", f"http.users_file: null -> {users}",
                "acl.enabled: True -> False"):
        assert key in r.stdout, r.stdout


def test_log_level_is_applied_by_a_reload(make_broker: Any) -> None:
    b = make_broker().start()
    cfg = Path(b.config_path)
    edit(cfg, lambda doc: doc.update(log_level="WARNING"))
    r = cli(b.socket, "reload")
    assert r.returncode == 0, r.stdout + r.stderr  # applied: nothing waits for a restart
    assert "reload: log_level is WARNING" in b.log()
    # An INFO line each reload logs as it begins: the first one's, at INFO, is there.
    assert b.log().count("received SIGHUP: reloading") == 1
    r = cli(b.socket, "reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert b.log().count("received SIGHUP: reloading") == 1, "INFO logged at level WARNING"


# The supervisor in a network namespace of its own with one non-loopback address (on its own lo:
# no kernel module needed): a listener "on the network" that reaches nothing outside the test.
# The shell execs the supervisor, so the broker's pid is the supervisor's.
NETNS_ADDRESS = "10.254.77.1"
NETNS = ["unshare", "--net", "--", "sh", "-c",
         f"ip link set lo up && ip addr add {NETNS_ADDRESS}/32 dev lo && exec \"$@\"", "sh"]


def test_a_network_listener_keeps_asking_for_authentication(tmp_path: Path) -> None:
    """The file now says loopback and no users file (valid for a loopback listener); the
    listener still runs on the network address until a restart, so the reload is refused and
    the users stay."""
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("unshare", "ip")):
        pytest.skip("needs root, unshare and ip (iproute2) for a network namespace of its own")
    import trustme

    cert = trustme.CA().issue_cert(NETNS_ADDRESS)
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    users = secret_file(tmp_path / "users.yaml", {"alice": OLD_SECRET})
    b = EmbeddedBroker(tmp_path / "broker", config={"http": {
        "enabled": True, "listen": f"{NETNS_ADDRESS}:0", "users_file": str(users),
        "tls_cert": str(tmp_path / "server.pem"), "tls_key": str(tmp_path / "server.key")}},
        wrapper=NETNS)
    try:
        b.start()
        cfg = Path(b.config_path)
        edit(cfg, lambda doc: doc.update(http={"enabled": True, "listen": "127.0.0.1:0"}))
        r = cli(b.socket, "reload")
        assert r.returncode == 1, r.stdout + r.stderr
        assert (f"the HTTP listener runs on {NETNS_ADDRESS}:0, not a loopback address, so it "
                "keeps asking for authentication") in r.stderr
        with Admin(socket=b.socket) as admin:
            st = admin.status()
        assert st["reload"]["reloads"] == 0 and st["http"]["listen"].startswith(NETNS_ADDRESS)
    finally:
        b.cleanup()


def test_reload_of_a_supervisor_without_a_config_file_says_so(tmp_path: Path) -> None:
    """The quickstart runs `edgebus serve` on built-in defaults, with no config file: `edgebus
    reload` then fails (exit 1) saying there is no file to apply, not "did not apply None"."""
    sock = str(tmp_path / "eb.sock")
    env = {**os.environ, "EDGEBUS_KAFKA_LISTENERS": "127.0.0.1:0"}
    proc = subprocess.Popen([sys.executable, "-m", "edgebus.cli.main", "serve", "--data-dir",
                             str(tmp_path / "data"), "--socket", sock],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_for(lambda: Path(sock).exists(), 60, "the supervisor's socket")
        r = cli(sock, "reload")
        assert r.returncode == 1, r.stderr
        assert "did not apply a reload: no config file" in r.stderr, r.stderr
        assert "None" not in r.stderr, r.stderr
    finally:
        proc.terminate()
        proc.wait(30)
