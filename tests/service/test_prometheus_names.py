"""The supervisor's /metrics (issue 14 item 21): the standard process_* names dashboards expect,
and per-topic records and bytes in and out, scraped from a real supervisor while they move."""

from __future__ import annotations

import time

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.procmetrics import boot_time
from edgebus.testing import EmbeddedBroker
from edgebus.testing import scrape_metrics as scrape

pytestmark = pytest.mark.integration


def test_boot_time_from_the_clocks_is_proc_stat_btime():
    with open("/proc/stat") as fh:
        btime = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
    assert abs(boot_time() - btime) < 2


def test_process_names_and_per_topic_counters_move(tmp_path):
    b = EmbeddedBroker(tmp_path / "broker", config={"metrics": {"listen": "127.0.0.1:0"}})
    b.start()
    try:
        port = b.metrics_port
        with Admin(socket=b.socket) as a:
            a.create_topic("hot", partitions=1)
            a.create_topic("cold", partitions=1)
        before = scrape(port)
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                     "process_virtual_memory_bytes", "process_start_time_seconds",
                     "process_open_fds", "process_max_fds"):
            assert name in before, name
        assert before["process_resident_memory_bytes"] > 1e6
        assert abs(before["process_start_time_seconds"] - time.time()) < 600
        assert before["process_open_fds"] >= 3

        value = b"x" * 100
        with Producer(socket=b.socket, acks="written") as p:
            for _ in range(30):
                p.send("hot", value)
            p.flush()
            p.send_batch("hot", [value] * 20).get(10)  # one batch of 20 records
            p.send("cold", value).get(10)
        c = Consumer(socket=b.socket)
        c.assign([TopicPartition("hot", 0)])
        c.seek_to_beginning()
        got = 0
        deadline = time.monotonic() + 20
        while got < 50 and time.monotonic() < deadline:
            got += sum(len(v) for v in c.poll(timeout_ms=200).values())
        c.close()
        assert got == 50

        after = scrape(port)
        assert after['edgebus_topic_records_in_total{topic="hot"}'] == 50
        assert after['edgebus_topic_records_in_total{topic="cold"}'] == 1
        assert after['edgebus_topic_bytes_in_total{topic="hot"}'] > 50 * 100
        assert after['edgebus_topic_records_out_total{topic="hot"}'] == 50
        assert after['edgebus_topic_bytes_out_total{topic="hot"}'] == \
            after['edgebus_topic_bytes_in_total{topic="hot"}']
        assert 'edgebus_topic_records_out_total{topic="cold"}' not in after
        assert after["edgebus_records_in_total"] == 51
        assert after["process_cpu_seconds_total"] >= before["process_cpu_seconds_total"]
        assert after["process_start_time_seconds"] == before["process_start_time_seconds"]
    finally:
        b.cleanup()
