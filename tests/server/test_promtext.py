"""edgebus/server/promtext.py writes Prometheus' text format to the byte as prometheus-client's
generate_latest writes the same families (the supervisor does not import prometheus-client: its
8 MB, issue 16); and the process_* families carry ProcessCollector's names and figures."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from edgebus.procmetrics import boot_time
from edgebus.server import promtext as P
from edgebus.server.metrics import process_families

VALUES = [0, 1, -1, 1.5, 0.001, 200, 1e7, 123456789.0, 2**53, 1.25e-9, math.inf, -math.inf, math.nan]
LABELS = ["plain", 'quo"te', "back\\slash", "new\nline", "ünï", ""]
BUCKETS = [("0.001", 1), ("0.01", 4), ("0.1", 9), ("1.0", 10), ("+Inf", 12)]


def _theirs() -> Iterator[Any]:
    g = GaugeMetricFamily("t_gauge", "A gauge\\ with\na newline", labels=["a", "b"])
    c = CounterMetricFamily("t_counter_total", "A counter", labels=["topic"])
    for i, v in enumerate(VALUES):
        g.add_metric([LABELS[i % len(LABELS)], str(i)], v)
        c.add_metric([LABELS[i % len(LABELS)] + str(i)], abs(v))
    yield g
    yield c
    yield CounterMetricFamily("t_plain", "No labels, no _total given", value=3)
    yield GaugeMetricFamily("t_single", "A value", value=7.25)
    h = HistogramMetricFamily("t_seconds", "A histogram")
    h.add_metric([], BUCKETS, 2.5)
    yield h
    yield GaugeMetricFamily("t_empty", "No samples", labels=["x"])


def _ours() -> Iterator[P.Family]:
    g = P.gauge("t_gauge", "A gauge\\ with\na newline", labels=["a", "b"])
    c = P.counter("t_counter_total", "A counter", labels=["topic"])
    for i, v in enumerate(VALUES):
        g.add_metric([LABELS[i % len(LABELS)], str(i)], v)
        c.add_metric([LABELS[i % len(LABELS)] + str(i)], abs(v))
    yield g
    yield c
    yield P.counter("t_plain", "No labels, no _total given", value=3)
    yield P.gauge("t_single", "A value", value=7.25)
    yield P.histogram("t_seconds", "A histogram", BUCKETS, 2.5)
    yield P.gauge("t_empty", "No samples", labels=["x"])


class _Collector:
    def collect(self) -> Iterator[Any]:
        return _theirs()


def test_render_is_prometheus_clients_text_format_to_the_byte() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())  # type: ignore[arg-type]
    theirs = generate_latest(registry)
    ours = P.render(_ours())
    assert ours == theirs
    # and it parses back: every family, with every sample
    parsed = {f.name: f for f in text_string_to_metric_families(ours.decode())}
    assert set(parsed) == {"t_gauge", "t_counter", "t_plain", "t_single", "t_seconds", "t_empty"}
    assert len(parsed["t_gauge"].samples) == len(VALUES)


def test_go_float_writes_what_go_writes() -> None:
    assert [P.go_float(v) for v in (1e7, 123456789.0, 0.5, 3, math.inf, -math.inf, math.nan)] == \
        ["1e+07", "1.23456789e+08", "0.5", "3.0", "+Inf", "-Inf", "NaN"]


def test_process_families_are_process_collectors() -> None:
    registry = CollectorRegistry(auto_describe=False)

    class _Clock(ProcessCollector):  # as edgebus.procmetrics.process_collector does it
        def _boot_time(self) -> float:
            return boot_time()

    _Clock(registry=registry)
    theirs = {f.name: f.samples[0].value for f in registry.collect()}
    ours = {f.name: f.samples[0][2] for f in process_families()}
    assert set(ours) == set(theirs) == {
        "process_virtual_memory_bytes", "process_resident_memory_bytes",
        "process_start_time_seconds", "process_cpu_seconds", "process_open_fds", "process_max_fds"}
    assert ours["process_max_fds"] == theirs["process_max_fds"]
    assert abs(ours["process_start_time_seconds"] - theirs["process_start_time_seconds"]) < 1
    assert abs(ours["process_start_time_seconds"] - time.time()) < 3600
    assert abs(ours["process_virtual_memory_bytes"] - theirs["process_virtual_memory_bytes"]) \
        < 64 * 2**20
    assert abs(ours["process_resident_memory_bytes"] - theirs["process_resident_memory_bytes"]) \
        < 16 * 2**20
    assert abs(ours["process_open_fds"] - len(os.listdir("/proc/self/fd"))) <= 2
    assert 0 < ours["process_cpu_seconds"] <= theirs["process_cpu_seconds"] + 1
