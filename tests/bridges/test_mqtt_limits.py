"""Payload size limits (issue 14 item 17): `--check` says them, and a dead letter keeps the whole
payload as far as its record fits (not the 64 KiB it was cut to before); beyond, it is cut to
fit and says the original size. Unit tests of the rule, then a real Mosquitto, a real supervisor
and the bridge as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mqtt_helpers import REPO, Device, needs_mosquitto, read_all

from bridges.mqtt import routes as R
from bridges.mqtt.config import HEADER_ALLOWANCE, MAX_BATCH_BYTES

KiB = 1024


def route(**kw: object) -> R.IngressRoute:
    return R.IngressRoute(**{"filter": "dev/+/data", "topic": "t", "dead_letter_topic": "dlq",
                             "validate": R.Validation(max_bytes=64 * KiB), **kw})  # type: ignore[arg-type]


def test_a_dead_letter_keeps_the_whole_payload_when_it_fits() -> None:
    payload = b"p" * (100 * KiB)
    out = route(max_record_bytes=256 * KiB).process("dev/1/data", payload, 1, False, False)
    assert isinstance(out, R.Rejected)
    assert out.value == payload
    assert R.H_DLQ_TRUNCATED not in dict(out.headers)


def test_a_dead_letter_too_large_for_a_record_is_cut_to_fit() -> None:
    payload = b"p" * (300 * KiB)
    out = route(max_record_bytes=256 * KiB).process("dev/1/data", payload, 1, False, False)
    assert isinstance(out, R.Rejected)
    assert dict(out.headers)[R.H_DLQ_TRUNCATED] == str(300 * KiB).encode()
    assert R.record_size(out.key, out.value, out.headers) == 256 * KiB  # as much as fits
    assert payload.startswith(out.value)


def test_check_says_the_limits(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump({"ingress": [{"filter": "dev/#", "topic": "t"}]}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "bridge", "mqtt", "--config",
                          str(path), "--check"], env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    limits = [ln for ln in out.stdout.splitlines() if ln.startswith("limit:")]
    text = "\n".join(limits)
    assert "edgebus.max_batch_bytes = 256 KiB" in text
    assert f"no payload above {(MAX_BATCH_BYTES - HEADER_ALLOWANCE) // KiB} KiB can pass" in text
    assert "ingress[0] 'dev/#': payloads up to validate.max_bytes = 64 KiB" in text
    assert "dead letters keep the whole payload up to about 252 KiB" in text
    assert "max_message_bytes (1 MiB by default)" in text


@pytest.mark.integration
@needs_mosquitto
def test_large_payloads_reach_the_dead_letter_topic_whole_or_say_they_were_cut(
        mosquitto, edgebus_broker, make_bridge) -> None:
    sock = edgebus_broker.socket
    bridge = make_bridge({
        "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "client_id": "bridge-limits"},
        "edgebus": {"socket": sock, "acks": "written", "create_topics": True},
        "ingress": [{"filter": "dev/+/data", "topic": "t.data"}],
    }).start()
    bridge.wait_connected()
    dev = Device(mosquitto.port, "d0", "dev/d0/data")
    medium = bytes(range(256)) * 400     # 100 KiB: above validate.max_bytes (64 KiB)
    large = bytes(range(256)) * 2400     # 600 KiB: above what one record may hold
    dev.publish(0, payload=medium)
    dev.publish(1, payload=large)
    dev.flush()
    bridge.wait_status(lambda s: s["counters"]["in_acked"] == 2 and s["gauges"]["in_pending"] == 0,
                       30, "both acknowledged")
    dead = sorted(read_all(sock, "mqtt.dead-letter", 2), key=lambda r: r.offset)
    assert len(dead) == 2
    assert dead[0].value == medium  # whole: it was cut to 64 KiB before
    h = dict(dead[0].headers)
    assert b"exceeds max_bytes=65536" in h[R.H_DLQ_REASON] and R.H_DLQ_TRUNCATED not in h
    h = dict(dead[1].headers)
    assert h[R.H_DLQ_TRUNCATED] == str(len(large)).encode()
    assert large.startswith(dead[1].value) and len(dead[1].value) > 250 * KiB
    dev.close()
    assert bridge.stop() == 0
