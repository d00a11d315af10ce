"""Real components for the MQTT bridge tests: a Mosquitto process on a free port with its own config
file, the bridge as a real subprocess, paho-mqtt devices that publish numbered messages, and checks
of what arrived in edgebus. Fixtures are in conftest.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgebus import Consumer, TopicPartition
from edgebus.testing import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                          if os.path.exists("/usr/sbin/mosquitto") else None)
needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None, reason="the mosquitto binary is not installed (apt-get install mosquitto)")


class Mosquitto:
    """mosquitto -c CONF on 127.0.0.1:PORT. With persistence, stop() + start() keep its sessions
    and queued messages (saved at exit); with save_every_change too, kill9() + start() keep all but
    what it acknowledged since its last save (it saves after every change, but after sending the
    PUBACK; and the saves make it much slower)."""

    def __init__(self, root: Path, persistence: bool = False, save_every_change: bool = False,
                 extra: str = "") -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = root / "mosquitto.conf"
        self.log_path = root / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            # The default (1000) drops messages for a slow or absent persistent client.
            "max_queued_messages 0",
            "max_inflight_messages 20",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {root}/",
            "autosave_interval 1" if save_every_change else "autosave_interval 3600",
            f"autosave_on_changes {'true' if save_every_change else 'false'}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to 'mosquitto', who cannot write root/
        self.conf.write_text("\n".join(lines) + "\n" + extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed_on_stop = 0

    def start(self, timeout: float = 10.0) -> Mosquitto:
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False

        wait_for(listening, timeout, "mosquitto to listen")
        return self

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its sessions and queues as it exits. If it has not exited
        after 60 s it is killed, which loses what it had not saved: `killed_on_stop` counts
        that, so a test can tell such a loss from the bridge's."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)  # a bound for a stuck Mosquitto (10 s was near at load 35)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.killed_on_stop += 1
        self.proc = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


class BridgeProcess:
    """`python -m edgebus.cli.main bridge mqtt --config FILE` as a child process."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.status_file = root / "status.json"
        config = {**config, "status": {"file": str(self.status_file), "interval_ms": 200}}
        self.config = config
        self.config_path = root / "bridge.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = root / "bridge.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> BridgeProcess:
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.status_file.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgebus.cli.main", "bridge", "mqtt",
                 "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root)
        self.starts += 1
        return self

    def status(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return None

    def wait_status(self, pred: Callable[[dict[str, Any]], bool], timeout: float,
                    what: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the bridge exited with {self.proc.returncode}:\n"
                                     f"{self.log()}")
            st = self.status()
            return st if st is not None and pred(st) else None

        try:
            return wait_for(check, timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}\nstatus: {self.status()}\nlog:\n{self.log()}") from None

    def wait_connected(self, timeout: float = 60.0) -> dict[str, Any]:
        # A bound for a bridge that never connects, not a speed check: at load 33 on two cores
        # a bridge had not even written its first status (nor a log line) 20 s after its start.
        return self.wait_status(
            lambda s: s["mqtt"]["connected"] and s["gauges"]["edgebus_connected"], timeout,
            "the bridge to connect to MQTT and edgebus")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


class Device:
    """A simulated device: its own paho client publishing numbered JSON readings at QoS 1.

    One thread does everything (publishing, paho's network loop, reconnecting), so the device
    keeps its own order across broker restarts: with paho's background thread, a publish made
    between reconnect() and the CONNACK goes out before the unacknowledged messages that paho
    resends on CONNACK, and the device itself would reorder its stream.
    """

    def __init__(self, port: int, device_id: str, topic: str, protocol: str = "5") -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.id = device_id
        self.topic = topic
        v5 = protocol == "5"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{device_id}",
                                  protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        self.client.max_inflight_messages_set(20)
        self.acked = 0
        self.sent = 0
        self.reconnects = 0
        # Packet id -> seq of each publish not acknowledged yet, and seq -> how many times it was
        # unacknowledged when a new connection was accepted: paho sends those again (DUP) after
        # the CONNACK, and a broker that had stored the first copy (its PUBACK lost as it
        # stopped) takes the second as a new message. An upper bound on the device's resends.
        self.unacked: dict[int, int] = {}
        self.resent: dict[int, int] = {}
        self._closing = False
        self._thread: threading.Thread | None = None
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.pump(10.0, until=self.client.is_connected)

    def _on_publish(self, client: Any, userdata: Any, mid: int, *args: Any) -> None:
        self.acked += 1
        self.unacked.pop(mid, None)

    def _on_connect(self, *args: Any) -> None:
        for seq in self.unacked.values():
            self.resent[seq] = self.resent.get(seq, 0) + 1

    def pump(self, timeout: float, until: Callable[[], bool] | None = None) -> None:
        """Run paho's loop in this thread (reconnecting as needed) for `timeout` seconds, or
        until `until()` is true and the client is connected."""
        from paho.mqtt.enums import MQTTErrorCode

        deadline = time.monotonic() + timeout
        first = True
        while True:
            connected = self.client.is_connected()
            if until is not None and connected and until():
                return
            left = deadline - time.monotonic()
            if (left <= 0 and not first) or self._closing:
                return
            first = False
            try:
                rc = self.client.loop(max(0.0, min(left, 0.02)))
            except (OSError, ValueError):
                rc = MQTTErrorCode.MQTT_ERR_CONN_LOST
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                time.sleep(0.05)
                try:
                    self.client.reconnect()
                    self.reconnects += 1
                except OSError:
                    pass

    def publish(self, seq: int, payload: bytes | None = None, topic: str | None = None,
                qos: int = 1, **kw: Any) -> None:
        """Publish from the caller's thread (then pump() there to deliver it)."""
        self.pump(30.0, until=lambda: True)  # connected first: see the class docstring
        body = payload if payload is not None else json.dumps(
            {"device": self.id, "seq": seq}).encode()
        info = self.client.publish(topic or self.topic, body, qos=qos, **kw)
        if qos:
            self.unacked[info.mid] = seq
        self.sent += 1

    def flush(self, timeout: float = 30.0) -> None:
        self.pump(timeout, until=lambda: self.acked >= self.sent)

    def run(self, count: int, rate: float | None = None, start: int = 0) -> threading.Thread:
        """Publish seq start..start+count-1 in a thread (at `rate` messages/s if given), then
        keep its connection served until every publish is acknowledged."""
        def body() -> None:
            t0 = time.monotonic()
            for i in range(count):
                self.publish(start + i)
                if rate:
                    self.pump(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
                else:
                    self.pump(0.0)
            self.pump(120.0, until=lambda: self.acked >= self.sent)

        self._thread = threading.Thread(target=body, daemon=True)
        self._thread.start()
        return self._thread

    def close(self) -> None:
        self._closing = True
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(Exception):
            self.client.disconnect()


def read_all(socket_path: str, topic: str, expect: int, timeout: float = 60.0,
             quiet: float = 0.5) -> list[Any]:
    """Every record of `topic` from the beginning: waits until at least `expect` are there, every
    record there when the read began has been read, and nothing new came for `quiet` seconds.
    (The second condition: with `expect` 0, a loaded machine's first polls could come back
    empty for `quiet` seconds and the read end with a part of the topic, read as lost.)"""
    c = Consumer(socket=socket_path, auto_offset_reset="earliest")
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
        c.assign(tps)
        c.seek_to_beginning()
        ends = c.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            got = c.poll(timeout_ms=100, max_records=5000)
            n = sum(len(v) for v in got.values())
            for recs in got.values():
                out.extend(recs)
            if n:
                last_new = time.monotonic()
            elif (len(out) >= expect and time.monotonic() - last_new >= quiet
                  and all(c.position(tp) >= end for tp, end in ends.items())):
                break
        return out
    finally:
        c.close()


def device_sequences(records: list[Any]) -> dict[str, list[int]]:
    """device id -> seq numbers in log order (records of one device share one partition)."""
    out: dict[str, list[int]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        doc = json.loads(r.value)
        out.setdefault(doc["device"], []).append(doc["seq"])
    return out


def check_no_loss(seqs: dict[str, list[int]], devices: list[str], count: int) -> dict[str, int]:
    """Every seq 0..count-1 of every device present (count 0: check only the order), first
    occurrences in order; returns the number of duplicates per device."""
    dups = {}
    for d in devices:
        got = seqs.get(d, [])
        missing = sorted(set(range(count)) - set(got))
        assert not missing, f"device {d}: {len(missing)} messages lost, first {missing[:10]}"
        first: list[int] = []
        seen: set[int] = set()
        for s in got:
            if s not in seen:
                seen.add(s)
                first.append(s)
        bad = [(i, first[i - 1], first[i]) for i in range(1, len(first)) if first[i] < first[i - 1]]
        assert not bad, f"device {d}: order broken at {bad[:5]} (index, before, after)"
        dups[d] = len(got) - len(seen)
    return dups


def bridge_deliveries(log_path: Path) -> dict[tuple[str, int], list[tuple[int, int, bool]]]:
    """(device, seq) -> every delivery of that reading to the bridge, from its DEBUG trace
    ("received gen G mid M ... dup D ... payload") as (connection generation, packet id, DUP),
    in the order received (each process of a restarted bridge appends to the same log; its
    generations start again at 1)."""
    got: dict[tuple[str, int], list[tuple[int, int, bool]]] = {}
    for m in re.finditer(r'received gen (\d+) mid (\d+) qos \d dup (\d) retain \d \S+ '
                         r'b\'\{"device": "(d\d+)", "seq": (\d+)\}\'',
                         log_path.read_text(errors="replace")):
        got.setdefault((m.group(4), int(m.group(5))), []).append(
            (int(m.group(1)), int(m.group(2)), m.group(3) == "1"))
    return got


def split_duplicates(records: list[Any], deliveries: dict[tuple[str, int], list[Any]],
                     devices: list[Device]) -> tuple[int, int, list[str]]:
    """Who made each extra copy of a reading in edgebus: (copies the bridge appended more than
    once, copies that are separate MQTT messages from the broker, and those of the latter that
    their device cannot have sent: descriptions).

    The broker gives every message it delivers its own packet id, and keeps it when it sends
    the message again (DUP) in the session. So the MQTT messages of a reading are its distinct
    packet ids in the bridge's trace (within a session whose 16-bit ids did not wrap: a few
    thousand messages here), and a copy beyond them was appended twice by the bridge. Two
    messages of one reading mean its device sent it twice (a QoS 1 publisher resends what was
    not acknowledged when its connection broke; the broker stored both), which
    Device.resent bounds."""
    copies: dict[tuple[str, int], int] = {}
    for r in records:
        doc = json.loads(r.value)
        key = (doc["device"], doc["seq"])
        copies[key] = copies.get(key, 0) + 1
    resent = {(d.id, s): n for d in devices for s, n in d.resent.items()}
    by_bridge = by_device = 0
    unexplained = []
    for key, n in sorted(copies.items()):
        if n < 2:
            continue
        messages = min(n, max(1, len({mid for _, mid, _ in deliveries.get(key, ())})))
        by_bridge += n - messages
        by_device += messages - 1
        if messages - 1 > resent.get(key, 0):
            unexplained.append(f"{key}: {n} copies, deliveries {sorted(deliveries.get(key, ()))},"
                               f" unacknowledged at {resent.get(key, 0)} reconnections")
    return by_bridge, by_device, unexplained


def not_redelivered(records: list[Any],
                    deliveries: dict[tuple[str, int], list[tuple[int, int, bool]]]) -> list[str]:
    """The readings with more copies in edgebus than deliveries that could make one: the first
    delivery, and each one the broker sent again (DUP). Empty when every duplicate is a message
    the broker sent again, the bridge's promise across its own crashes."""
    copies: dict[tuple[str, int], int] = {}
    for r in records:
        doc = json.loads(r.value)
        key = (doc["device"], doc["seq"])
        copies[key] = copies.get(key, 0) + 1
    bad = []
    for key, n in sorted(copies.items()):
        got = deliveries.get(key, [])
        if n > 1 + sum(1 for _, _, dup in got if dup):
            bad.append(f"{key}: {n} copies, deliveries {got}")
    return bad
