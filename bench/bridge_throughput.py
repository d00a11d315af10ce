#!/usr/bin/env python3
"""How fast the MQTT bridge moves messages from Mosquitto into edgebus records.

A backlog of --messages QoS 1 messages from 5 devices is queued in Mosquitto for the bridge's
persistent session while the bridge is stopped; then the bridge starts and drains it. The figure
is records appended per second, from the first record in the topic to the last (so neither the
publishers' speed nor the bridge's start-up is measured). Real processes: a supervisor, Mosquitto
and the bridge (`edgebus bridge mqtt`), each with the code of --tree (default: this checkout), so
two versions can be compared in one session:

    git archive OLD | tar -x -C /tmp/old && cp edgebus/*.so /tmp/old/edgebus/ && \\
        cp edgebus/shm/*.so /tmp/old/edgebus/shm/
    .venv/bin/python -m bench.bridge_throughput --tree /tmp/old
    .venv/bin/python -m bench.bridge_throughput

Needs the mosquitto binary (Debian package `mosquitto`) and paho-mqtt.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from edgebus.testing import free_port

REPO = Path(__file__).resolve().parents[1]
TOPIC = "devices.telemetry"
DEVICES = 5
PARTITIONS = 3
POLL = 0.02  # how often the topic's end offsets are read while the backlog drains


def wait(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def start_mosquitto(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = root / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 0",
             "persistence false", f"log_dest file {root / 'mosquitto.log'}"]
    if os.geteuid() == 0:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False

    wait(up, 10, "mosquitto")
    return proc, port


def bridge_config(root: Path, port: int, sock: str, args: argparse.Namespace) -> Path:
    cfg = {
        "log_level": "WARNING",
        "mqtt": {"port": port, "client_id": "bench-bridge", "receive_maximum": args.receive_maximum},
        "edgebus": {"socket": sock, "acks": args.acks, "create_topics": True},
        "ingress": [{"filter": "devices/+/telemetry", "topic": TOPIC, "key": {"topic_level": 1}}],
        "status": {"file": str(root / "status.json"), "interval_ms": 100},
    }
    path = root / "bridge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def publish_backlog(port: int, count: int) -> None:
    """count messages per device, QoS 1, each acknowledged by Mosquitto (so queued for the
    bridge's session)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    clients = []
    for d in range(DEVICES):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-dev-{d}")
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        c.connect("127.0.0.1", port)
        c.loop_start()
        clients.append(c)
    infos = []
    for i in range(count):
        for d, c in enumerate(clients):
            body = json.dumps({"device": f"d{d}", "seq": i}).encode()
            infos.append(c.publish(f"devices/d{d}/telemetry", body, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    for c in clients:
        c.disconnect()
        c.loop_stop()


def end_offsets(admin: Any) -> int:
    return sum(p.log_end_offset for p in admin.describe_topic(TOPIC).partitions)


def run(args: argparse.Namespace) -> float:
    from edgebus import Admin
    from edgebus.testing import EmbeddedBroker

    root = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    env = {**os.environ, "PYTHONPATH": f"{args.tree}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    broker = EmbeddedBroker(root / "edgebus", log_level="WARNING")
    broker.start(env=env)
    mosq, port = start_mosquitto(root)
    bridge: subprocess.Popen[bytes] | None = None
    try:
        with Admin(socket=broker.socket) as admin:
            admin.create_topic(TOPIC, partitions=PARTITIONS)
            cmd = [sys.executable, "-m", "edgebus.cli.main", "bridge", "mqtt", "--config",
                   str(bridge_config(root, port, broker.socket, args))]
            status = root / "status.json"

            def connected() -> bool:
                try:
                    return bool(json.loads(status.read_text())["mqtt"]["connected"])
                except (OSError, ValueError, KeyError):
                    return False

            log = open(root / "bridge.log", "ab")  # noqa: SIM115 (kept open for the child)
            # First run: make the persistent session (the subscription), then stop.
            bridge = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
            wait(connected, 30, "the bridge to connect")
            bridge.send_signal(signal.SIGTERM)
            bridge.wait(30)
            status.unlink(missing_ok=True)
            total = DEVICES * args.messages
            publish_backlog(port, args.messages)
            bridge = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
            deadline = time.monotonic() + 600
            while end_offsets(admin) == 0 and time.monotonic() < deadline:
                time.sleep(POLL)
            first = time.monotonic()
            n = 0
            while n < total and time.monotonic() < deadline:
                time.sleep(POLL)
                n = end_offsets(admin)
            last = time.monotonic()
            if n < total:
                raise SystemExit(f"only {n} of {total} records arrived")
            return (total - 1) / (last - first)
    finally:
        if bridge is not None and bridge.poll() is None:
            bridge.kill()
            bridge.wait()
        mosq.kill()
        mosq.wait()
        broker.kill9()
        broker.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=4000, help="per device (5 devices)")
    ap.add_argument("--acks", default="written", choices=("written", "durable"))
    ap.add_argument("--receive-maximum", type=int, default=64)
    ap.add_argument("--tree", default=str(REPO), help="the checkout whose bridge and supervisor run")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    rates = [run(args) for _ in range(args.repeat)]
    print(f"bridge throughput ({args.tree}, acks={args.acks}, receive_maximum="
          f"{args.receive_maximum}, {DEVICES * args.messages} messages): "
          + ", ".join(f"{r:,.0f}" for r in rates) + " records/s")


if __name__ == "__main__":
    main()
