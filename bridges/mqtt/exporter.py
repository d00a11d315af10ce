"""The bridge's HTTP endpoint (`metrics: {listen: 127.0.0.1:9465}`): Prometheus metrics at
/metrics and the status document at /status.

Why HTTP as well as the status file: under systemd the bridge runs as its own user and may not be
able to write next to the supervisor's socket, and a file says only what the bridge last managed
to write. The endpoint answers from the running process, and `edgebus bridge status --config`
asks it first. prometheus-client gives the metric families, the text format and the standard
`process_*` metrics; bridges/endpoint.py (shared with the replicator) serves them. Reading the
counters takes the Metrics lock briefly; nothing else is shared.

Names: every counter of metrics.COUNTERS as `edgebus_mqtt_bridge_<name>_total` and every gauge as
`edgebus_mqtt_bridge_<name>`, e.g. messages in `..._in_received_total`, out
`..._out_published_total`, dead letters `..._in_dead_lettered_total` and
`..._out_dead_lettered_total`, acks pending `..._in_pending`, reconnects `..._mqtt_connects_total`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from bridges.endpoint import Endpoint
from bridges.mqtt.metrics import COUNTERS, GAUGES, Metrics

PREFIX = "edgebus_mqtt_bridge_"


class BridgeCollector:
    """Fresh families at each scrape from the bridge's counters and gauges."""

    def __init__(self, metrics: Metrics, client_id: str) -> None:
        self.metrics = metrics
        self.client_id = client_id

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.metrics.snapshot()
        info = GaugeMetricFamily(PREFIX + "info", "The bridge's MQTT client id",
                                 labels=["client_id"])
        info.add_metric([self.client_id], 1)
        yield info
        yield GaugeMetricFamily(PREFIX + "started_time_seconds",
                                "When the bridge started, seconds since the epoch",
                                value=self.metrics.started)
        for name in COUNTERS:
            yield CounterMetricFamily(PREFIX + name, f"Bridge counter {name} (bridges/mqtt/"
                                      "metrics.py)", value=snap["counters"][name])
        for name in GAUGES:
            yield GaugeMetricFamily(PREFIX + name, f"Bridge gauge {name} (bridges/mqtt/"
                                    "metrics.py)", value=snap["gauges"][name])


class Exporter(Endpoint):
    """The bridge's endpoint (bridges/endpoint.py) with its counters and gauges."""

    def __init__(self, listen: str, metrics: Metrics, client_id: str,
                 status: Callable[[], dict[str, Any]]) -> None:
        super().__init__(listen, BridgeCollector(metrics, client_id), status, "MQTT bridge")
