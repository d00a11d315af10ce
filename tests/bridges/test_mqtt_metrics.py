"""The bridge's metrics and status endpoint (issue 14 items 16 and 21), against a real Mosquitto,
a real supervisor and the bridge as a real subprocess: Prometheus names and values that move,
`edgebus bridge status` when the status file cannot be written (the systemd layout), and that
failure logged once, not every interval."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mqtt_helpers import REPO, Device, free_port, needs_mosquitto, wait_for

from bridges.mqtt.config import config_from_mapping, default_status_file
from edgebus.testing import scrape_metrics as scrape

pytestmark = [pytest.mark.integration, needs_mosquitto]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RUNTIME_DIRECTORY", None)
    return subprocess.run([sys.executable, "-m", "edgebus.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=30)


def test_metrics_and_status_served_when_the_status_file_cannot_be_written(
        mosquitto, edgebus_broker, make_bridge, tmp_path) -> None:
    cfg = {
        "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "client_id": "bridge-metrics"},
        "edgebus": {"socket": edgebus_broker.socket, "acks": "written", "create_topics": True},
        "ingress": [{"filter": "devices/+/telemetry", "topic": "telemetry",
                     "validate": {"json": True}}],
        # A fixed port: `bridge status --config` asks there.
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
    }
    bridge = make_bridge(cfg)
    # Like /run/edgebus for the bridge's user under systemd: no way to create the file there.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    bridge.config["status"]["file"] = str(blocker / "status.json")
    bridge.config_path.write_text(yaml.safe_dump(bridge.config, sort_keys=False))
    bridge.start()
    port = int(wait_for(lambda: re.search(r"metrics endpoint on http://127\.0\.0\.1:(\d+)/",
                                          bridge.log()), 30, "the metrics endpoint").group(1))
    wait_for(lambda: scrape(port)["edgebus_mqtt_bridge_mqtt_connected"] == 1 and
             scrape(port)["edgebus_mqtt_bridge_edgebus_connected"] == 1, 30, "connections")
    before = scrape(port)
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_start_time_seconds", "process_open_fds"):
        assert name in before, name
    assert before["edgebus_mqtt_bridge_in_received_total"] == 0
    assert before["edgebus_mqtt_bridge_mqtt_connects_total"] == 1
    assert before['edgebus_mqtt_bridge_info{client_id="bridge-metrics"}'] == 1

    dev = Device(mosquitto.port, "d0", "devices/d0/telemetry")
    for i in range(5):
        dev.publish(i)
    dev.publish(5, payload=b"not json")
    dev.flush()
    wait_for(lambda: scrape(port)["edgebus_mqtt_bridge_in_acked_total"] == 6, 30, "six acks")
    after = scrape(port)
    assert after["edgebus_mqtt_bridge_in_received_total"] == 6
    assert after["edgebus_mqtt_bridge_in_appended_total"] == 5
    assert after["edgebus_mqtt_bridge_in_dead_lettered_total"] == 1
    assert after["edgebus_mqtt_bridge_in_pending"] == 0
    assert after["process_start_time_seconds"] == before["process_start_time_seconds"]
    dev.close()

    out = run_cli("bridge", "status", "--config", str(bridge.config_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "running; mqtt up, edgebus up; in 5 appended, 1 dead-lettered" in out.stdout
    # Many intervals (200 ms) later, the failure is still logged once.
    time.sleep(2.0)
    assert bridge.log().count("cannot write the status file") == 1, bridge.log()
    assert bridge.stop() == 0
    out = run_cli("bridge", "status", "--config", str(bridge.config_path))
    assert out.returncode == 3 and "not running" in out.stdout, out.stdout + out.stderr


def test_status_file_goes_to_the_runtime_directory_systemd_gives(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    assert default_status_file("b1") == tmp_path / "run" / "mqtt-bridge-b1.status.json"
    cfg = config_from_mapping({"ingress": [{"filter": "a/#", "topic": "a"}]})
    assert cfg.status_file.parent == Path(tmp_path / "run")
