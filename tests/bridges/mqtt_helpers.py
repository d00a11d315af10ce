"""Real components for the MQTT bridge tests: a Mosquitto process on a free port with its own config
file, the bridge as a real subprocess, paho-mqtt devices that publish numbered messages, and checks
of what arrived in edgebus. Fixtures are in conftest.py."""

from __future__ import annotations

import json
import os
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

REPO = Path(__file__).resolve().parents[2]
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                          if os.path.exists("/usr/sbin/mosquitto") else None)
needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None, reason="the mosquitto binary is not installed (apt-get install mosquitto)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Mosquitto:
    """mosquitto -c CONF on 127.0.0.1:PORT. With persistence, kill9() + start() keep its queued
    messages and sessions (autosave after every change, the setting the bridge README asks for)."""

    def __init__(self, root: Path, persistence: bool = False, extra: str = "") -> None:
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
            "autosave_interval 1",
            "autosave_on_changes true",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to 'mosquitto', who cannot write root/
        self.conf.write_text("\n".join(lines) + "\n" + extra)
        self.proc: subprocess.Popen[bytes] | None = None

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
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
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

    def wait_connected(self, timeout: float = 20.0) -> dict[str, Any]:
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
    paho keeps unacknowledged publishes and sends them again after a reconnect."""

    def __init__(self, port: int, device_id: str, topic: str, protocol: str = "5") -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.id = device_id
        self.topic = topic
        v5 = protocol == "5"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{device_id}",
                                  protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.max_inflight_messages_set(20)
        self.acked = 0
        self._lock = threading.Lock()
        self.client.on_publish = self._on_publish
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        self.sent = 0

    def _on_publish(self, *args: Any) -> None:
        with self._lock:
            self.acked += 1

    def publish(self, seq: int, payload: bytes | None = None, topic: str | None = None,
                qos: int = 1, **kw: Any) -> None:
        body = payload if payload is not None else json.dumps(
            {"device": self.id, "seq": seq}).encode()
        self.client.publish(topic or self.topic, body, qos=qos, **kw)
        self.sent += 1

    def run(self, count: int, rate: float | None = None, start: int = 0) -> threading.Thread:
        """Publish seq start..start+count-1 in a thread, at `rate` messages/s if given."""
        def body() -> None:
            t0 = time.monotonic()
            for i in range(count):
                self.publish(start + i)
                if rate:
                    delay = t0 + (i + 1) / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
        t = threading.Thread(target=body, daemon=True)
        t.start()
        return t

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def read_all(socket_path: str, topic: str, expect: int, timeout: float = 60.0,
             quiet: float = 0.5) -> list[Any]:
    """Every record of `topic` from the beginning: waits until at least `expect` are there and
    nothing new came for `quiet` seconds."""
    c = Consumer(socket=socket_path, auto_offset_reset="earliest")
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
        c.assign(tps)
        c.seek_to_beginning()
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
            elif len(out) >= expect and time.monotonic() - last_new >= quiet:
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
    """Every seq 0..count-1 of every device present, first occurrences in order; returns the
    number of duplicates per device."""
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
        assert first == sorted(first), f"device {d}: order broken"
        dups[d] = len(got) - len(seen)
    return dups
