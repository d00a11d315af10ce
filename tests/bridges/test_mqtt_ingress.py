"""The MQTT bridge against a real Mosquitto and a real supervisor: every message arrives, in order
per device, through broker restarts, bridge crashes and supervisor restarts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from mqtt_helpers import (
    REPO,
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
    wait_drained(bridge, len(DEVICES) * count)
    # The acks leave after the appends (the worker sends them once in_pending is down): a
    # status written between the two has every record appended and some acks still to go.
    st = bridge.wait_status(lambda s: s["counters"]["in_acked"] >= len(DEVICES) * count, 30,
                            "every message acknowledged")
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


def test_malformed_payloads_go_to_the_dead_letter_topic_with_a_reason(
        mosquitto, edgebus_broker, make_bridge) -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    dlq = "mqtt.rejected"
    cfg = bridge_config(mosquitto, edgebus_broker.socket)
    cfg["dead_letter"] = {"topic": dlq}
    cfg["ingress"] = [
        {"filter": "devices/+/telemetry", "topic": TOPIC, "key": {"topic_level": 1},
         "validate": {"json": True, "required_fields": ["seq"], "max_bytes": 1024}},
        {"filter": "meters/#", "topic": "meters", "key": {"payload_field": "meter.id"}},
    ]
    bridge = make_bridge(cfg).start()
    bridge.wait_connected()
    dev = Device(mosquitto.port, "d0", "devices/d0/telemetry")
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("unit", "C")]
    sent = [  # (topic, payload, where it must land, reason)
        ("devices/d0/telemetry", b'{"device": "d0", "seq": 1}', TOPIC, None),
        ("devices/d0/telemetry", b"not json {", dlq, "payload is not valid JSON"),
        ("devices/d0/telemetry", b'{"device": "d0"}', dlq, "required field 'seq' is missing"),
        ("devices/d0/telemetry", b'{"seq": 2, "pad": "' + b"x" * 2000 + b'"}', dlq,
         "exceeds max_bytes=1024"),
        ("devices/d0/telemetry", b"\xff\xfe binary", dlq, "payload is not valid JSON"),
        ("meters/hall", b'{"meter": {"id": "m-7"}, "kwh": 1.5}', "meters", None),
        ("meters/hall", b'{"kwh": 2.5}', dlq, "key field 'meter.id' is missing"),
    ]
    for i, (topic, payload, _, _) in enumerate(sent):
        dev.publish(i, payload=payload, topic=topic, properties=props)
    dev.flush()
    st = bridge.wait_status(
        lambda s: s["counters"]["in_acked"] == len(sent) and s["gauges"]["in_pending"] == 0,
        30, "every message appended and acknowledged")
    assert st["counters"]["in_dead_lettered"] == 5
    assert st["counters"]["in_appended"] == 2

    dead = read_all(edgebus_broker.socket, dlq, 5)
    assert len(dead) == 5  # none dropped, none doubled
    expected = [(p, r) for _, p, where, r in sent if where == dlq]
    for rec, (payload, reason) in zip(sorted(dead, key=lambda r: r.offset), expected, strict=True):
        h = dict(rec.headers)
        assert rec.value == payload  # the payload, byte for byte
        assert reason in h["edgebus.dlq.reason"].decode()
        assert h["mqtt.user.unit"] == b"C"  # MQTT 5 user properties kept
        assert h["mqtt.topic"] in (b"devices/d0/telemetry", b"meters/hall")
        assert h["edgebus.dlq.route"] in (b"devices/+/telemetry", b"meters/#")
    good = read_all(edgebus_broker.socket, "meters", 1)
    assert [(r.key, r.value) for r in good] == [(b"m-7", sent[5][1])]
    dev.close()
    # The status subcommand: one line while it runs (exit 0), "not running" after (exit 3).
    out = run_cli("bridge", "status", "--config", str(bridge.config_path))
    assert out.returncode == 0, out.stderr
    assert "running; mqtt up, edgebus up; in 2 appended, 5 dead-lettered, 0 in flight" in out.stdout
    assert bridge.stop() == 0
    out = run_cli("bridge", "status", "--status-file", str(bridge.status_file))
    assert out.returncode == 3 and "not running (stopped" in out.stdout


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "edgebus.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=30)
