"""The MQTT broker unreachable for a long time (the uplink down for days): the bridge retries at
its backoff's pace, and used to log one WARNING per attempt (about 240 lines an hour at the
default 30 s cap, a million over a year of a flaky uplink). Now it logs the failure once per
change of error, and one line when it connects again; the failures are still counted in the
status and metrics."""

from __future__ import annotations

from typing import Any

import pytest
from mqtt_helpers import BridgeProcess, Mosquitto, needs_mosquitto, wait_for

pytestmark = [pytest.mark.integration, needs_mosquitto]


def test_an_unreachable_broker_is_logged_once_per_change(
        mosquitto: Mosquitto, edgebus_broker: Any, make_bridge: Any) -> None:
    bridge: BridgeProcess = make_bridge({
        "mqtt": {"port": mosquitto.port, "client_id": "bridge-uplink-down",
                 "reconnect_min_ms": 20, "reconnect_max_ms": 50},
        "edgebus": {"socket": edgebus_broker.socket, "create_topics": True},
        "ingress": [{"filter": "uplink/#", "topic": "uplink-down"}],
    }).start()
    bridge.wait_connected()
    mosquitto.kill9()
    st = bridge.wait_status(lambda s: s["counters"]["mqtt_connect_failures"] >= 20, 60,
                            "twenty failed attempts to connect")
    lines = [ln for ln in bridge.log().splitlines() if "cannot connect to" in ln]
    assert len(lines) == 1, lines
    assert st["counters"]["mqtt_connect_failures"] >= 20
    mosquitto.start()
    bridge.wait_connected(60)
    wait_for(lambda: f"connected to 127.0.0.1:{mosquitto.port} again" in bridge.log()
             or f"connected to localhost:{mosquitto.port} again" in bridge.log(), 20,
             "the line saying the bridge connected again")
