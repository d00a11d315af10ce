"""`edgebus status` (table and --json), the Prometheus endpoint, and an idle supervisor's CPU."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest

from edgebus import Admin, Consumer, Producer
from edgebus.testing import EmbeddedBroker

pytestmark = pytest.mark.integration


@pytest.fixture
def busy_broker(tmp_path):
    """A supervisor with metrics on a free loopback port, a topic, traffic and a consumer group."""
    b = EmbeddedBroker(tmp_path / "broker", config={"metrics": {"listen": "127.0.0.1:0"}})
    b.start()
    with Admin(socket=b.socket) as a:
        a.create_topic("sensors", partitions=2)
    with Producer(socket=b.socket, acks="durable") as p:
        for i in range(200):
            p.send("sensors", b"t=%d" % i, partition=i % 2)
        p.flush()
    c = Consumer("sensors", socket=b.socket, group_id="alarms", auto_offset_reset="earliest")
    got = 0
    deadline = time.monotonic() + 20
    while got < 150 and time.monotonic() < deadline:
        got += sum(len(v) for v in c.poll(timeout_ms=200, max_records=150 - got).values())
    c.commit()
    try:
        yield b, c
    finally:
        c.close()
        b.cleanup()


def cli(b: EmbeddedBroker, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "edgebus.cli.main", *args, "--socket", b.socket],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_status_json_has_everything_an_operator_needs(busy_broker):
    b, _ = busy_broker
    st = json.loads(cli(b, "status", "--json"))
    for key in ("version", "uptime_s", "data_dir", "rss_bytes", "cpu_s", "records_in",
                "records_out", "clients", "groups", "topics"):
        assert key in st, key
    assert st["data_dir"] == str(b.data_dir)
    assert st["disk"]["free"] > 0 and st["disk"]["used"] > 0 and st["disk"]["state"] == "ok"
    assert st["rss_bytes"] > 1_000_000
    parts = st["topics"]["sensors"]["partitions"]
    assert [p["log_end_offset"] for p in parts] == [100, 100]
    assert all(p["size_bytes"] > 0 and p["log_start_offset"] == 0 for p in parts)
    assert st["records_in"] == 200 and st["records_out"] >= 150
    assert any(c["pid"] > 0 for c in st["clients"])  # the consumer, by SO_PEERCRED
    (group,) = st["groups"]
    assert group["group"] == "alarms" and group["members"] == 1
    assert group["lag"] == 50 == sum(p["lag"] for p in group["partitions"])
    assert all(p["log_end_offset"] == 100 for p in group["partitions"])


def test_status_table_for_people(busy_broker):
    b, _ = busy_broker
    out = cli(b, "status")
    assert re.search(r"^uptime:\s+\d+", out, re.M)
    assert re.search(r"^disk:\s+.* used, .* free of .*low watermark", out, re.M)
    assert re.search(r"^memory:\s+[\d.]+ MiB RSS", out, re.M)
    assert re.search(r"^TOPIC\s+PARTITION\s+LOG START\s+LOG END", out, re.M)
    assert re.search(r"^sensors\s+1\s+0\s+100\s+100", out, re.M)
    assert re.search(r"^GROUP\s+STATE\s+MEMBERS\s+TOPIC\s+PARTITION\s+COMMITTED\s+LOG END\s+LAG",
                     out, re.M)
    assert "__consumer_offsets" not in out  # internal topics only with --all
    assert "__consumer_offsets" in cli(b, "status", "--all")
    assert "\x1b[" not in out  # no colour codes when not a terminal


def test_prometheus_endpoint(busy_broker):
    b, _ = busy_broker
    port = b.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()

    def value(name: str) -> float:
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        assert m, name
        return float(m.group(1))

    assert value("edgebus_records_in_total") == 200
    assert value("edgebus_records_out_total") >= 150
    assert value("edgebus_bytes_in_total") > 0
    assert value("edgebus_disk_free_bytes") > 0 and value("edgebus_disk_low") == 0
    assert value("edgebus_fsync_duration_seconds_count") >= 1
    assert value('edgebus_fsync_duration_seconds_bucket{le="+Inf"}') == \
        value("edgebus_fsync_duration_seconds_count")
    assert value('edgebus_log_end_offset{partition="1",topic="sensors"}') == 100
    lags = re.findall(r'^edgebus_consumer_group_lag\{group="alarms",.*\} (\S+)$', text, re.M)
    assert sum(float(x) for x in lags) == 50
    assert value("edgebus_process_resident_memory_bytes") > 0
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=10)
    assert e.value.code == 404


def test_idle_supervisor_uses_almost_no_cpu(tmp_path):
    b = EmbeddedBroker(tmp_path / "broker", config={"metrics": {"listen": "127.0.0.1:0"}})
    b.start()
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic("idle")
        time.sleep(0.5)
        proc = psutil.Process(b.pid)
        t0 = sum(proc.cpu_times()[:2])
        time.sleep(3.0)
        used = sum(proc.cpu_times()[:2]) - t0
        assert used < 0.06, f"{used:.3f} CPU seconds in 3 s of idling"
    finally:
        b.cleanup()
