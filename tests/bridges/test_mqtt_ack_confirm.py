"""The broker confirms the bridge's PUBACKs (connection.py, "Confirmed acks"): an UNSUBSCRIBE of
a filter never subscribed, sent behind the PUBACKs, is answered by a real Mosquitto (MQTT 5 and
3.1.1), after which no PUBACK is left unconfirmed. (That a confirmed PUBACK is not sent again
after a crash is what tests/bridges/test_mqtt_crash_duplicates.py checks.)"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from mqtt_helpers import Device, needs_mosquitto, wait_for

from bridges.mqtt.config import config_from_mapping
from bridges.mqtt.connection import MqttConnection
from bridges.mqtt.metrics import Metrics

pytestmark = [pytest.mark.integration, needs_mosquitto]


class Received:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.msgs: list[tuple[int, int, bool]] = []  # (generation, mid, dup)
        self.confirmed = threading.Event()

    def on_message(self, msg: Any, generation: int, session_present: bool) -> None:
        with self.lock:
            self.msgs.append((generation, msg.mid, bool(msg.dup)))

    def on_confirmed(self) -> None:
        self.confirmed.set()


def wait_until(pred: Any, timeout: float) -> bool:
    try:
        wait_for(pred, timeout, "")
        return True
    except AssertionError:
        return False


def connection(port: int, protocol: str, got: Received) -> MqttConnection:
    cfg = config_from_mapping({
        "mqtt": {"port": port, "protocol": protocol, "client_id": f"confirm-{protocol}",
                 "reconnect_min_ms": 50, "reconnect_max_ms": 200},
        "ingress": [{"filter": "dev/#", "topic": "t"}],
    })
    return MqttConnection(cfg.mqtt, Metrics(), on_message=got.on_message,
                          subscriptions=[("dev/#", 1)], on_acks_confirmed=got.on_confirmed)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_the_broker_confirms_the_acks_sent_before_the_barrier(mosquitto, devices, protocol):
    got = Received()
    conn = connection(mosquitto.port, protocol, got)
    conn.start()
    try:
        assert conn.wait_connected(10)
        dev = Device(mosquitto.port, "d0", "dev/d0")
        devices.append(dev)

        def subscribed() -> bool:  # a probe gets through once the SUBACK is in
            dev.publish(-1)
            dev.flush()
            return wait_until(lambda: bool(got.msgs), 0.2)

        wait_for(subscribed, 10, "the subscription")
        with got.lock:
            probes, got.msgs = got.msgs, []
        for i in range(10):  # within Mosquitto's max_inflight_messages with the probes
            dev.publish(i)
        dev.flush()
        wait_for(lambda: len(got.msgs) == 10, 10, "10 messages")
        assert not conn.confirming()
        for gen, mid, _ in probes + got.msgs:
            assert conn.ack(gen, mid, 1)
        assert conn.unconfirmed_acks() == len(probes) + 10
        conn.confirm_acks()
        assert conn.confirming()
        conn.wake()
        assert got.confirmed.wait(10), "no UNSUBACK for the barrier"
        wait_for(lambda: conn.unconfirmed_acks() == 0 and not conn.confirming(), 10,
                 "every ack confirmed")
    finally:
        conn.stop()
