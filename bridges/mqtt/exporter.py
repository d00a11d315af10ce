"""The bridge's HTTP endpoint (`metrics: {listen: 127.0.0.1:9465}`): Prometheus metrics at
/metrics and the status document at /status.

Why HTTP as well as the status file: under systemd the bridge runs as its own user and may not be
able to write next to the supervisor's socket, and a file says only what the bridge last managed
to write. The endpoint answers from the running process, and `edgebus bridge status --config`
asks it first. prometheus-client gives the metric families, the text format and the standard
`process_*` metrics; wsgiref (with prometheus-client's threading server) serves them on a daemon
thread. Reading the counters takes the Metrics lock briefly; nothing else is shared.

Names: every counter of metrics.COUNTERS as `edgebus_mqtt_bridge_<name>_total` and every gauge as
`edgebus_mqtt_bridge_<name>`, e.g. messages in `..._in_received_total`, out
`..._out_published_total`, dead letters `..._in_dead_lettered_total` and
`..._out_dead_lettered_total`, acks pending `..._in_pending`, reconnects `..._mqtt_connects_total`.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from bridges.mqtt.metrics import COUNTERS, GAUGES, Metrics
from edgebus.opsconfig import split_listen
from edgebus.procmetrics import process_collector

log = logging.getLogger("edgebus.bridge.mqtt")

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


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


class Exporter:
    """The endpoint's server thread; `status()` gives the /status document."""

    def __init__(self, listen: str, metrics: Metrics, client_id: str,
                 status: Callable[[], dict[str, Any]]) -> None:
        from prometheus_client import CollectorRegistry, make_wsgi_app
        from prometheus_client.exposition import ThreadingWSGIServer

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(BridgeCollector(metrics, client_id))
        process_collector(self.registry)
        self._metrics_app = make_wsgi_app(self.registry)
        self._status = status
        host, port = split_listen(listen)

        class _Server(ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self._server = make_server(host, port, self._app, _Server, _QuietHandler)
        self.port = int(self._server.server_address[1])
        self.host = host
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()
        host = f"[{self.host}]" if ":" in self.host else self.host
        log.info("metrics endpoint on http://%s:%d/metrics (status at /status)", host, self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)

    def _app(self, environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/status", "/status/"):
            doc = self._status()
            doc["served_at"] = time.time()
            body = json.dumps(doc, sort_keys=True).encode()
            start("200 OK", [("Content-Type", "application/json"),
                             ("Content-Length", str(len(body)))])
            return [body]
        if path in ("/metrics", "/metrics/"):
            out: Iterable[bytes] = self._metrics_app(environ, start)
            return out
        body = b"edgebus MQTT bridge: /metrics (Prometheus) and /status (JSON)\n"
        start("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Length", str(len(body)))])
        return [body]
