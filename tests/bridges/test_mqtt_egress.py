"""Egress: records of an edgebus topic, read in a consumer group, reach MQTT subscribers exactly as
produced, and offsets are committed only after the broker's PUBACK."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from mqtt_helpers import needs_mosquitto, read_all, wait_for

from edgebus import Admin, Producer, TopicPartition

pytestmark = [pytest.mark.integration, needs_mosquitto]

GROUP = "bridge-egress"


class Subscriber:
    """A paho client with a persistent session, collecting what it receives."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.got: list[tuple[str, bytes, int, bool, list[tuple[str, str]]]] = []
        self.lock = threading.Lock()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="command-listener",
                        protocol=mqtt.MQTTv5)

        def on_message(client: Any, userdata: Any, m: Any) -> None:
            props = list(getattr(m.properties, "UserProperty", None) or [])
            with self.lock:
                self.got.append((m.topic, m.payload, m.qos, bool(m.retain), props))

        c.on_message = on_message
        c.on_connect = lambda client, *a: client.subscribe(topic, 1)
        # The subscription holds from its SUBACK on: a command published before it would reach
        # no one (a timed sleep here was short on a loaded machine).
        self.subscribed = threading.Event()
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        p = Properties(PacketTypes.CONNECT)
        p.SessionExpiryInterval = 3600
        c.connect("127.0.0.1", port, clean_start=False, properties=p)
        c.loop_start()
        self.client = c
        wait_for(self.subscribed.is_set, 20, "the subscriber's SUBACK")

    def messages(self) -> list[Any]:
        with self.lock:
            return list(self.got)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def committed(admin: Admin, tp: TopicPartition) -> int:
    o = admin.list_group_offsets(GROUP).get(tp)
    return -1 if o is None else o.offset


def test_command_record_reaches_the_mqtt_subscriber_exactly_as_produced(
        make_mosquitto, edgebus_broker, make_bridge) -> None:
    mosq = make_mosquitto(persistence=True)  # stop()/start() keeps the subscriber's session
    with Admin(socket=edgebus_broker.socket) as admin:
        admin.create_topic("commands", partitions=1)
    bridge = make_bridge({
        "mqtt": {"port": mosq.port, "client_id": "bridge-egress", "reconnect_min_ms": 50,
                 "reconnect_max_ms": 300},
        "edgebus": {"socket": edgebus_broker.socket, "create_topics": True},
        "egress": [{"topic": "commands", "group": GROUP,
                    "mqtt_topic": "kitchen/teapot/{key}/command", "qos": 1}],
    }).start()
    bridge.wait_connected()
    sub = Subscriber(mosq.port, "kitchen/teapot/+/command")
    tp = TopicPartition("commands", 0)
    payload = bytes(range(256)) * 3  # binary, every byte value: nothing may be re-encoded
    with Producer(socket=edgebus_broker.socket) as producer, \
            Admin(socket=edgebus_broker.socket) as admin:
        meta = producer.send("commands", payload, key=b"pot-1",
                             headers=[("reason", b"boiling"), ("raw", b"\xff\x00")]).get(10)
        wait_for(lambda: sub.messages(), 20, "the command to reach the subscriber")
        topic, got, qos, retain, props = sub.messages()[0]
        assert (topic, got, qos, retain) == ("kitchen/teapot/pot-1/command", payload, 1, False)
        assert props == [("reason", "boiling")]  # UTF-8 headers only, as MQTT 5 user properties
        wait_for(lambda: committed(admin, tp) == meta.offset + 1, 10, "the commit after PUBACK")

        # Without the broker there is no PUBACK, so nothing is committed...
        mosq.stop()
        before = bridge.status()["counters"]["out_polled"]
        meta2 = producer.send("commands", b"off", key=b"pot-2").get(10)
        bridge.wait_status(lambda s: s["counters"]["out_polled"] > before, 10,
                           "the bridge to read the record")
        time.sleep(0.5)
        assert committed(admin, tp) == meta.offset + 1
        # ...until it is back: the publish is sent again, acknowledged, then committed.
        mosq.start()
        wait_for(lambda: len(sub.messages()) >= 2, 30, "the second command after the restart")
        assert sub.messages()[1][:2] == ("kitchen/teapot/pot-2/command", b"off")
        wait_for(lambda: committed(admin, tp) == meta2.offset + 1, 20, "the second commit")

        # A record whose key cannot be one topic level is dead-lettered, then committed past.
        meta3 = producer.send("commands", b"x", key=b"a/b").get(10)
        wait_for(lambda: committed(admin, tp) == meta3.offset + 1, 20, "the commit past it")
    dead = read_all(edgebus_broker.socket, "mqtt.dead-letter", 1)
    assert len(dead) == 1 and dead[0].key == b"a/b"
    assert b"not a single topic level" in dict(dead[0].headers)["edgebus.dlq.reason"]
    assert len(sub.messages()) == 2
    sub.close()
    assert bridge.stop() == 0
