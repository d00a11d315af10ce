"""The MQTT bridge process: wiring, threads, status file and a clean shutdown.

Threads: "mqtt-network" (connection.py), "ingress" (ingress.py), one "egress-N" per egress route
(egress.py), the producer's own I/O thread, and the main thread, which waits for SIGTERM/SIGINT and
writes the status file.

Shutdown (SIGTERM or SIGINT): stop reading MQTT, let every held record be appended and acknowledged
(up to SHUTDOWN_DRAIN seconds), let egress publishes in flight be acknowledged and committed, then
DISCONNECT (the session stays on the broker) and close the producer. Whatever did not finish in time
is simply not acknowledged or committed, and comes again: nothing is lost by a slow shutdown.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from bridges.mqtt.clients import EdgebusClient
from bridges.mqtt.config import BridgeConfig
from bridges.mqtt.connection import MqttConnection
from bridges.mqtt.egress import Egress, PublishRouter
from bridges.mqtt.exporter import Exporter
from bridges.mqtt.ingress import Ingress
from bridges.mqtt.metrics import Metrics, write_status
from edgebus.errors import ConfigError

log = logging.getLogger("edgebus.bridge.mqtt")

SHUTDOWN_DRAIN = 10.0


class Bridge:
    def __init__(self, cfg: BridgeConfig) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.edgebus = EdgebusClient(cfg, self.metrics)
        self.ingress = Ingress(cfg, self.metrics, self.edgebus)
        self.router = PublishRouter()
        self.egress = [Egress(r, cfg, self.metrics, self.edgebus, self.router)
                       for r in cfg.egress]
        self.conn = MqttConnection(
            cfg.mqtt, self.metrics, on_message=self.ingress.on_message,
            subscriptions=self.ingress.subscriptions, can_read=self.ingress.can_read,
            on_published=self.router.on_published, on_connected=self.ingress.on_connected,
            session_file=cfg.session_file, router=self.ingress.router)
        self.ingress.conn = self.conn
        for e in self.egress:
            e.conn = self.conn
        self._stop = threading.Event()        # the worker threads end
        self._requested = threading.Event()   # a signal asked for shutdown
        self._threads: list[threading.Thread] = []
        self.state = "starting"
        self.exporter: Exporter | None = None
        self._status_error: str | None = None  # the last failure to write the status file

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self.cfg.metrics.listen is not None:
            try:
                self.exporter = Exporter(self.cfg.metrics.listen, self.metrics,
                                         self.cfg.mqtt.client_id, self.status)
            except OSError as err:
                raise ConfigError(f"metrics.listen: cannot listen on {self.cfg.metrics.listen}: "
                                  f"{err.strerror or err}") from None
            self.exporter.start()
        self.conn.start()
        self._spawn("ingress", self.ingress.run)
        for i, e in enumerate(self.egress):
            self._spawn(f"egress-{i}", e.run)
        self.state = "running"
        log.info("bridge %s started: %d ingress and %d egress route(s), MQTT %s at %s:%d, "
                 "edgebus acks=%s", self.cfg.mqtt.client_id, len(self.cfg.ingress),
                 len(self.cfg.egress), self.cfg.mqtt.protocol, self.cfg.mqtt.host,
                 self.cfg.mqtt.port, self.cfg.edgebus.acks)

    def _spawn(self, name: str, target: Any) -> None:
        def body() -> None:
            try:
                target(self._stop)
            except Exception:
                log.exception("the %s thread failed; stopping the bridge", name)
                self.metrics.error(f"the {name} thread failed")
                self._requested.set()

        t = threading.Thread(target=body, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def request_stop(self) -> None:
        self._requested.set()

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT (or request_stop), shut down; the exit status."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self._requested.set())
        self.start()
        interval = self.cfg.status.interval_ms / 1000
        while not self._requested.wait(interval):
            self.write_status()
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        self.state = "stopping"
        self.write_status()
        deadline = time.monotonic() + SHUTDOWN_DRAIN
        drained = self.ingress.drain(SHUTDOWN_DRAIN)
        for e in self.egress:
            e.drain()
        while not all(e.idle() for e in self.egress) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not drained:
            log.warning("shutting down with records still held; their messages were not "
                        "acknowledged and the broker will send them again")
        self._stop.set()
        for t in self._threads:
            t.join(5.0)
        self.conn.stop()
        self.edgebus.close()
        self.state = "stopped"
        self.write_status()
        if self.exporter is not None:
            self.exporter.stop()
        log.info("bridge %s stopped", self.cfg.mqtt.client_id)

    # --- status ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        self.ingress.sync_metrics()
        c = self.cfg
        doc = {
            "bridge": "mqtt", "client_id": c.mqtt.client_id, "pid": os.getpid(),
            "state": self.state, "started_at": self.metrics.started, "written_at": time.time(),
            "interval_ms": c.status.interval_ms,
            "mqtt": {"host": c.mqtt.host, "port": c.mqtt.port, "protocol": c.mqtt.protocol,
                     "connected": self.conn.connected.is_set(),
                     "session_present": self.conn.session_present,
                     "connection": self.conn.generation,
                     "receive_maximum": c.mqtt.receive_maximum},
            "edgebus": {"socket": self.edgebus.socket, "acks": c.edgebus.acks},
            "status_file": str(c.status_file),
            "ingress": [{"filter": r.filter, "topic": r.topic} for r in c.ingress],
            "egress": [{"topic": r.topic, "mqtt_topic": r.mqtt_topic.text, "group": r.group}
                       for r in c.egress],
        }
        doc.update(self.metrics.snapshot())
        return doc

    def write_status(self) -> None:
        """Write the status file; a failure is logged once (and its end once), not every
        interval: it does not change while nobody fixes the directory."""
        path = self.cfg.status_file
        try:
            write_status(path, self.status())
        except OSError as e:
            error = f"{type(e).__name__}: {e.strerror or e}"
            if error != self._status_error:
                hint = "; status is served at /status of the metrics endpoint" \
                    if self.exporter is not None else \
                    " (set status.file to a writable place, or metrics.listen)"
                log.warning("cannot write the status file %s: %s%s", path, error, hint)
                self.metrics.error(f"cannot write the status file {path}: {error}")
            self._status_error = error
            return
        if self._status_error is not None:
            log.info("the status file %s is written again", path)
            self._status_error = None


def run(cfg: BridgeConfig) -> int:
    logging.basicConfig(level=cfg.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return Bridge(cfg).run()
