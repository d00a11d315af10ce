"""A bridge's HTTP endpoint: Prometheus metrics at /metrics and its status document at /status.

The bridges are separate processes (often separate users under systemd): this is how an operator
and Prometheus see inside a running one. prometheus-client gives the metric families, the text
format and the standard `process_*` metrics; its threading WSGI server serves them on a daemon
thread. Loopback only (the address is checked like the supervisor's metrics.listen): nothing
here is authenticated.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from edgebus.opsconfig import split_listen
from edgebus.procmetrics import process_collector

log = logging.getLogger("edgebus.bridge")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


class Endpoint:
    def __init__(self, listen: str, collector: Any, status: Callable[[], dict[str, Any]],
                 what: str) -> None:
        from prometheus_client import CollectorRegistry, make_wsgi_app
        from prometheus_client.exposition import ThreadingWSGIServer

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        process_collector(self.registry)
        self._metrics_app = make_wsgi_app(self.registry)
        self._status = status
        self._what = what
        host, port = split_listen(listen)

        class _Server(ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self._server = make_server(host, port, self._app, _Server, _QuietHandler)
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="endpoint",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()
        host = f"[{self.host}]" if ":" in self.host else self.host
        log.info("%s: metrics endpoint on http://%s:%d/metrics (status at /status)", self._what, host,
                 self.port)

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
        body = f"edgebus {self._what}: /metrics (Prometheus) and /status (JSON)\n".encode()
        start("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Length", str(len(body)))])
        return [body]
