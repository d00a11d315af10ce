"""The MQTT bridge over TLS and with authentication, against a real Mosquitto TLS listener whose
certificates the test makes (trustme): server TLS alone, client certificates required (with and
without one), username/password (right and wrong), and a CA that did not sign the broker's
certificate (a clear error, and retries at the slowest pace instead of a storm).

About a minute: four Mosquitto TLS listeners and bridge processes, and the wrong-CA case waits
two real retries at reconnect_max_ms to show there is no storm."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from mqtt_helpers import (
    BridgeProcess,
    Device,
    Mosquitto,
    free_port,
    needs_mosquitto,
    read_all,
    wait_for,
)

from edgebus import Admin

pytestmark = [pytest.mark.integration, needs_mosquitto]

trustme = pytest.importorskip("trustme", reason="trustme makes the test certificates")

TOPIC = "devices.telemetry"
RECONNECT_MAX_MS = 2000


class Certs:
    def __init__(self, d: Path) -> None:
        d.mkdir()
        ca, other = trustme.CA(), trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("bridge-1")
        self.ca, self.wrong_ca = d / "ca.pem", d / "wrong-ca.pem"
        ca.cert_pem.write_to_path(self.ca)
        other.cert_pem.write_to_path(self.wrong_ca)
        self.server_cert, self.server_key = d / "server.pem", d / "server.key"
        server.cert_chain_pems[0].write_to_path(self.server_cert)
        server.private_key_pem.write_to_path(self.server_key)
        self.client_cert, self.client_key = d / "client.pem", d / "client.key"
        client.cert_chain_pems[0].write_to_path(self.client_cert)
        client.private_key_pem.write_to_path(self.client_key)


def tls_mosquitto(root: Path, certs: Certs, *, require_certificate: bool = False,
                  users: dict[str, str] | None = None) -> tuple[Mosquitto, int]:
    """Mosquitto with a plain listener (mosq.port: the test's devices) and a TLS listener (the
    returned port: the bridge), each with its own settings."""
    m = Mosquitto(root)
    tls_port = free_port()
    lines = ["per_listener_settings true",
             f"listener {m.port} 127.0.0.1", "allow_anonymous true",
             f"listener {tls_port} 127.0.0.1",
             f"cafile {certs.ca}", f"certfile {certs.server_cert}", f"keyfile {certs.server_key}",
             f"require_certificate {'true' if require_certificate else 'false'}"]
    if users:
        pw = root / "passwd"
        pw.touch(mode=0o600)
        for name, password in users.items():
            subprocess.run(["mosquitto_passwd", "-b", str(pw), name, password], check=True,
                           capture_output=True)
        lines += ["allow_anonymous false", f"password_file {pw}"]
    else:
        lines.append("allow_anonymous true")
    lines += ["max_queued_messages 0", "persistence false", f"log_dest file {m.log_path}",
              "log_type error", "log_type warning", "log_type notice"]
    if os.geteuid() == 0:
        lines.append("user root")
    m.conf.write_text("\n".join(lines) + "\n")
    return m.start(), tls_port


def bridge_config(port: int, socket: str, tls: dict[str, Any],
                  **mqtt: Any) -> dict[str, Any]:
    return {
        "mqtt": {"host": "127.0.0.1", "port": port, "client_id": "bridge-tls",
                 "keepalive_ms": "5s", "reconnect_min_ms": 50,
                 "reconnect_max_ms": RECONNECT_MAX_MS, "tls": tls, **mqtt},
        "edgebus": {"socket": socket, "acks": "written", "create_topics": True},
        "ingress": [{"filter": "devices/+/telemetry", "topic": TOPIC,
                     "key": {"topic_level": 1}}],
    }


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path / "certs")


class Rig:
    """One test's TLS Mosquitto and bridges, each stopped at the end (in reverse order)."""

    def __init__(self, root: Path, certs: Certs, socket: str, make_bridge: Any) -> None:
        self.root, self.certs, self.socket, self.make_bridge = root, certs, socket, make_bridge
        self.started: list[Any] = []

    def mosquitto(self, **options: Any) -> tuple[Mosquitto, int]:
        """tls_mosquitto, started: it and its TLS listener's port."""
        mosq, port = tls_mosquitto(self.root / "mosq", self.certs, **options)
        self.started.append(mosq)
        return mosq, port

    def bridge(self, port: int, tls: dict[str, Any], name: str = "bridge",
               **mqtt: Any) -> BridgeProcess:
        """A started bridge to the TLS listener at `port` (bridge_config's settings)."""
        b = self.make_bridge(bridge_config(port, self.socket, tls, **mqtt), name=name).start()
        self.started.append(b)
        return b


@pytest.fixture
def rig(tmp_path: Path, certs: Certs, edgebus_broker: Any, make_bridge: Any) -> Any:
    r = Rig(tmp_path, certs, edgebus_broker.socket, make_bridge)
    yield r
    for thing in reversed(r.started):
        thing.stop()


def flows(mosq: Mosquitto, bridge: BridgeProcess, socket: str) -> None:
    """A message published on the plain listener reaches edgebus through the TLS bridge."""
    bridge.wait_connected()
    dev = Device(mosq.port, "d1", "devices/d1/telemetry")
    try:
        dev.publish(1)
        dev.pump(10.0, until=lambda: dev.acked >= 1)
        with Admin(socket=socket) as admin:
            wait_for(lambda: TOPIC in admin.list_topics(), 30, "the bridge to create the topic")
        assert len(read_all(socket, TOPIC, 1)) == 1
    finally:
        dev.close()


def refused(bridge: BridgeProcess, says: list[str], failures: int = 1) -> dict[str, Any]:
    """The bridge stays unconnected, counts failures and says why in its status."""
    st = bridge.wait_status(lambda s: s["counters"]["mqtt_connect_failures"] >= failures, 60,
                            f"{failures} failed connection attempts")
    assert not st["mqtt"]["connected"]
    for text in says:
        assert text in (st["last_error"] or ""), st["last_error"]
    return st


def test_server_tls_without_a_client_certificate(rig: Rig, certs: Certs, edgebus_broker: Any) -> None:
    mosq, port = rig.mosquitto()
    bridge = rig.bridge(port, {"ca_file": str(certs.ca)})
    flows(mosq, bridge, edgebus_broker.socket)


def test_client_certificate_required(rig: Rig, certs: Certs, edgebus_broker: Any) -> None:
    mosq, port = rig.mosquitto(require_certificate=True)
    without = rig.bridge(port, {"ca_file": str(certs.ca)}, name="without")
    refused(without, ["closed the connection before accepting it", "mqtt.tls.cert_file"])
    without.stop()
    bridge = rig.bridge(port, {"ca_file": str(certs.ca), "cert_file": str(certs.client_cert),
                               "key_file": str(certs.client_key)}, name="with")
    flows(mosq, bridge, edgebus_broker.socket)


def test_username_and_password(tmp_path: Path, rig: Rig, certs: Certs, edgebus_broker: Any) -> None:
    mosq, port = rig.mosquitto(users={"bridge": "s3cret-pw"})
    wrong = rig.bridge(port, {"ca_file": str(certs.ca)}, name="wrong", username="bridge",
                       password="wrong")
    refused(wrong, ["refused the connection", "check mqtt.username and mqtt.password"])
    wrong.stop()
    pw = tmp_path / "pw"
    pw.write_text("s3cret-pw\n")
    pw.chmod(0o600)
    bridge = rig.bridge(port, {"ca_file": str(certs.ca)}, name="right", username="bridge",
                        password_file=str(pw))
    flows(mosq, bridge, edgebus_broker.socket)


def test_wrong_ca_is_a_clear_error_and_no_retry_storm(rig: Rig, certs: Certs) -> None:
    _, port = rig.mosquitto()
    bridge = rig.bridge(port, {"ca_file": str(certs.wrong_ca)})
    first = refused(bridge, ["certificate verify failed",
                             f"not trusted by mqtt.tls.ca_file {certs.wrong_ca}"], failures=1)
    t1 = time.monotonic()
    refused(bridge, [], failures=first["counters"]["mqtt_connect_failures"] + 2)
    # Two more attempts took at least two of the slowest waits (each >= reconnect_max_ms / 2,
    # equal jitter), where the backoff from reconnect_min_ms (50 ms) would have made them in
    # well under a second: a lower bound, which load on the machine can only lengthen.
    assert time.monotonic() - t1 >= 2 * (RECONNECT_MAX_MS / 1000 / 2) - 0.25
    assert "certificate verify failed" in bridge.log()
