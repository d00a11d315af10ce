"""No loss through failures: Mosquitto killed and restarted, the bridge SIGKILLed, the supervisor
restarted, all mid-stream. Duplicates are counted; after a bridge crash they are bounded by the
in-flight window (mqtt.receive_maximum)."""

from __future__ import annotations

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

pytestmark = [pytest.mark.integration, pytest.mark.crash, needs_mosquitto]

TOPIC = "devices.telemetry"
DEVICES = [f"d{i}" for i in range(5)]
RECEIVE_MAX = 32


def config(mosq: Mosquitto, socket: str) -> dict[str, Any]:
    return {
        "mqtt": {"port": mosq.port, "client_id": "bridge-faults", "keepalive_ms": "5s",
                 "receive_maximum": RECEIVE_MAX, "reconnect_min_ms": 50,
                 "reconnect_max_ms": 400},
        "edgebus": {"socket": socket, "acks": "written", "create_topics": True,
                    "retry_backoff_ms": 50, "retry_backoff_max_ms": 400},
        "ingress": [{"filter": "devices/+/telemetry", "topic": TOPIC,
                     "key": {"topic_level": 1}}],
    }


def setup(mosq: Mosquitto, socket: str, make_bridge: Any, made: list[Device]) -> BridgeProcess:
    with Admin(socket=socket) as admin:
        admin.create_topic(TOPIC, partitions=3)
    bridge = make_bridge(config(mosq, socket)).start()
    bridge.wait_connected()
    for d in DEVICES:
        made.append(Device(mosq.port, d, f"devices/{d}/telemetry"))
    wait_for(lambda: all(dev.client.is_connected() for dev in made), 10, "devices to connect")
    return bridge


def finish(devs: list[Device], socket: str, count: int,
           expected: set[tuple[str, int]] | None = None) -> tuple[dict[str, int], int]:
    """Wait for every publish to be acknowledged by Mosquitto and every expected message (default:
    all) to arrive; check that none is missing and per-device order; return the duplicates per
    device and the record count."""
    wait_for(lambda: all(d.acked >= count for d in devs), 60,
             "Mosquitto to acknowledge every publish")
    if expected is None:
        expected = {(d, s) for d in DEVICES for s in range(count)}

    def complete() -> list[Any] | None:
        recs = read_all(socket, TOPIC, 0, timeout=2, quiet=0.2)
        got = {(d, s) for d, seqs in device_sequences(recs).items() for s in seqs}
        return recs if got >= expected else None

    try:
        records = wait_for(complete, 30, "every message to arrive", interval=0.5)
    except AssertionError:
        records = read_all(socket, TOPIC, 0, timeout=2)
    seqs = device_sequences(records)
    got = {(d, s) for d, ss in seqs.items() for s in ss}
    lost = sorted(expected - got)
    assert not lost, f"{len(lost)} messages lost by the bridge, first {lost[:10]}"
    dups = check_no_loss({d: [s for s in ss if (d, s) in expected] for d, ss in seqs.items()},
                         DEVICES, 0)
    return dups, len(records)


class Witness:
    """An independent subscriber with its own persistent session that acknowledges a message
    after recording it (in memory; it never crashes): what Mosquitto really delivered."""

    def __init__(self, port: int) -> None:
        import json

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.got: set[tuple[str, int]] = set()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="witness",
                        protocol=mqtt.MQTTv5, manual_ack=True)

        def on_message(client: Any, userdata: Any, m: Any) -> None:
            doc = json.loads(m.payload)
            self.got.add((doc["device"], doc["seq"]))
            client.ack(m.mid, m.qos)

        c.on_message = on_message
        c.on_connect = lambda client, *a: client.subscribe("devices/+/telemetry", 1)
        c.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect("127.0.0.1", port, clean_start=False, properties=props)
        c.loop_start()
        self.client = c

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_mosquitto_killed_and_restarted_5_times_loses_nothing(
        mosquitto, edgebus_broker, make_bridge, devices, how) -> None:
    """SIGTERM: Mosquitto saves its state and every published message must arrive. SIGKILL:
    Mosquitto itself forgets what it acknowledged to a publisher but had not saved yet (it
    saves after each change, but after sending the PUBACK); the bridge must then have every
    message that Mosquitto delivered to an independent witness subscriber."""
    count = 600
    witness = Witness(mosquitto.port)
    bridge = setup(mosquitto, edgebus_broker.socket, make_bridge, devices)
    threads = [d.run(count, rate=250) for d in devices]  # 1,250 messages/s for 2.4 s
    for _ in range(5):
        time.sleep(0.35)
        if how == "SIGKILL":
            mosquitto.kill9()
        else:
            mosquitto.stop()
        time.sleep(0.15)
        mosquitto.start()
    for t in threads:
        t.join()
    expected = None
    if how == "SIGKILL":
        wait_for(lambda: all(d.acked >= count for d in devices), 60, "every publish acked")
        time.sleep(1.0)  # the witness catches up
        expected = set(witness.got)
    witness.close()
    dups, total = finish(devices, edgebus_broker.socket, count, expected)
    st = bridge.wait_status(lambda s: s["gauges"]["in_pending"] == 0, 30, "the bridge to idle")
    c = st["counters"]
    lost_by_mosquitto = len(DEVICES) * count - len(expected) if expected is not None else 0
    print(f"\nmosquitto {how} x5: {total} records, duplicates {sum(dups.values())} {dups}; "
          f"lost by Mosquitto itself {lost_by_mosquitto}; bridge connects {c['mqtt_connects']}, "
          f"redelivered {c['in_redelivered']}, merged {c['in_merged']}")
    assert c["mqtt_connects"] >= 6


def test_bridge_sigkilled_mid_stream_loses_nothing_and_duplicates_are_bounded(
        mosquitto, edgebus_broker, make_bridge, devices) -> None:
    count = 1000
    bridge = setup(mosquitto, edgebus_broker.socket, make_bridge, devices)
    threads = [d.run(count, rate=600) for d in devices]  # 3,000 messages/s
    wait_for(lambda: (bridge.status() or {}).get("counters", {}).get("in_appended", 0) > 1500,
             30, "the bridge to be mid-stream")
    bridge.kill9()
    time.sleep(0.5)  # Mosquitto queues for the bridge's session meanwhile
    bridge.start()
    for t in threads:
        t.join()
    dups, total = finish(devices, edgebus_broker.socket, count)
    total_dups = sum(dups.values())
    print(f"\nbridge SIGKILL: {total} records, duplicates {total_dups} {dups} "
          f"(bound: receive_maximum={RECEIVE_MAX})")
    # Only messages appended but not yet acknowledged when the bridge died come again, and the
    # bridge never holds more unacknowledged messages than its window.
    assert total_dups <= RECEIVE_MAX
    assert bridge.stop() == 0


def test_supervisor_restarted_mid_stream_bridge_waits_and_loses_nothing(
        mosquitto, edgebus_broker, make_bridge, devices) -> None:
    count = 800
    bridge = setup(mosquitto, edgebus_broker.socket, make_bridge, devices)
    threads = [d.run(count, rate=400) for d in devices]  # 2,000 messages/s for 2 s
    wait_for(lambda: (bridge.status() or {}).get("counters", {}).get("in_appended", 0) > 800,
             30, "the bridge to be mid-stream")
    edgebus_broker.kill9()
    # While the supervisor is down the bridge holds at most its window and stops reading.
    st = bridge.wait_status(lambda s: s["gauges"]["in_pending"] >= RECEIVE_MAX - 1, 10,
                            "the bridge to fill its window and wait")
    assert st["gauges"]["in_pending"] <= RECEIVE_MAX
    time.sleep(1.0)
    edgebus_broker.start()
    for t in threads:
        t.join()
    dups, total = finish(devices, edgebus_broker.socket, count)
    st = bridge.wait_status(lambda s: s["gauges"]["in_pending"] == 0, 30, "the bridge to idle")
    c = st["counters"]
    print(f"\nsupervisor kill -9: {total} records, duplicates {sum(dups.values())} {dups}; "
          f"append retries {c['in_append_retries']}, max held {st['gauges']['in_pending_max']}")
    assert c["in_append_retries"] > 0
    assert st["gauges"]["in_pending_max"] <= RECEIVE_MAX
    # Batches in flight when the supervisor died may have been written before it died; they are
    # sent again, so at most one window of records can be doubled.
    assert sum(dups.values()) <= RECEIVE_MAX
    assert bridge.stop() == 0
