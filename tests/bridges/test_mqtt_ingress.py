"""The MQTT bridge against a real Mosquitto and a real supervisor: every message arrives, in order
per device, through broker restarts, bridge crashes and supervisor restarts."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from mqtt_helpers import (
    BridgeProcess,
    Device,
    Mosquitto,
    check_no_loss,
    device_sequences,
    needs_mosquitto,
    read_all,
    wait_for,
)

from edgebus import Admin

pytestmark = [pytest.mark.integration, needs_mosquitto]

TOPIC = "devices.telemetry"
DEVICES = [f"d{i}" for i in range(5)]
RECEIVE_MAX = 32


def bridge_config(mosq: Mosquitto, socket: str, protocol: str = "5",
                  **edgebus: Any) -> dict[str, Any]:
    return {
        "mqtt": {"host": "127.0.0.1", "port": mosq.port, "protocol": protocol,
                 "client_id": "bridge-test", "keepalive_ms": "5s",
                 "receive_maximum": RECEIVE_MAX, "reconnect_min_ms": 50,
                 "reconnect_max_ms": 500},
        "edgebus": {"socket": socket, "acks": "written", "create_topics": True,
                    "retry_backoff_ms": 50,
                    "retry_backoff_max_ms": 500, **edgebus},
        "ingress": [{"filter": "devices/+/telemetry", "topic": TOPIC,
                     "key": {"topic_level": 1}, "validate": {"json": True}}],
    }


def start_devices(mosq: Mosquitto, made: list[Device], protocol: str = "5") -> list[Device]:
    for d in DEVICES:
        made.append(Device(mosq.port, d, f"devices/{d}/telemetry", protocol))
    wait_for(lambda: all(dev.client.is_connected() for dev in made), 10, "devices to connect")
    return made


def wait_published(devs: list[Device], count: int, timeout: float) -> None:
    wait_for(lambda: all(d.acked >= count for d in devs), timeout,
             f"devices to have {count} messages acknowledged by mosquitto "
             f"(have {[d.acked for d in devs]})")


def wait_drained(bridge: BridgeProcess, expect: int, timeout: float = 60.0) -> dict[str, Any]:
    return bridge.wait_status(
        lambda s: s["counters"]["in_appended"] >= expect and s["gauges"]["in_pending"] == 0,
        timeout, f"the bridge to append {expect} records")


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_10000_messages_from_5_devices_all_arrive_in_order(
        mosquitto, edgebus_broker, make_bridge, devices, protocol) -> None:
    count = 2000 if protocol == "5" else 400  # 5 x 2000 = 10,000; 3.1.1 is a shorter check
    with Admin(socket=edgebus_broker.socket) as admin:
        admin.create_topic(TOPIC, partitions=3)
    bridge = make_bridge(bridge_config(mosquitto, edgebus_broker.socket, protocol)).start()
    bridge.wait_connected()
    devs = start_devices(mosquitto, devices, protocol)
    t0 = time.monotonic()
    threads = [d.run(count) for d in devs]
    for t in threads:
        t.join()
    wait_published(devs, count, 60)
    st = wait_drained(bridge, len(DEVICES) * count)
    elapsed = time.monotonic() - t0
    records = read_all(edgebus_broker.socket, TOPIC, len(DEVICES) * count)
    dups = check_no_loss(device_sequences(records), DEVICES, count)
    assert sum(dups.values()) == 0, f"duplicates without any failure: {dups}"
    # Headers: the MQTT topic, QoS, retain and dup flags; the key is the device id.
    r = records[0]
    h = dict(r.headers)
    dev = json.loads(r.value)["device"]
    assert r.key == dev.encode()
    assert h["mqtt.topic"] == f"devices/{dev}/telemetry".encode()
    assert (h["mqtt.qos"], h["mqtt.retain"]) == (b"1", b"0")
    # Acks left only after appends: the window never held more than the receive maximum
    # (MQTT 5) or Mosquitto's max_inflight_messages (3.1.1), and everything was acknowledged.
    assert st["counters"]["in_acked"] == len(DEVICES) * count
    assert st["gauges"]["in_pending_max"] <= RECEIVE_MAX
    print(f"\n{protocol}: {len(records)} records in {elapsed:.1f} s "
          f"({len(records) / elapsed:.0f}/s), {st['counters']['in_batches']} batches, "
          f"max held {st['gauges']['in_pending_max']}")
    assert bridge.stop() == 0
