"""The bridge's counters and its status file.

The bridge writes a JSON status document every `status.interval_ms` (and at exit) to the status
file, atomically (write a temporary file, then rename). `edgebus bridge status` reads it; a file
older than three intervals means the bridge is not running (or is stuck).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# The status file is small; a bound keeps `bridge status` from reading a wrong path whole.
MAX_STATUS_BYTES = 1024 * 1024
STALE_INTERVALS = 3

COUNTERS = (
    # ingress
    "in_received",          # MQTT messages handed to the bridge (redeliveries included)
    "in_redelivered",       # ... of which the broker marked as redeliveries (DUP flag)
    "in_merged",            # redeliveries recognised as a message the bridge already held
    "in_appended",          # records appended to their topic
    "in_dead_lettered",     # records appended to a dead-letter topic instead
    "in_acked",             # PUBACKs sent
    "in_acks_dropped",      # acks not sent: the connection they belonged to was gone
    "in_batches",           # produce calls (one per partition per round)
    "in_append_retries",    # batches sent again after an error
    "in_qos0",              # QoS 0 messages (never acknowledged, at most once)
    "in_unrouted",          # messages matching no route (dead-lettered)
    "in_skipped_copies",    # copies of a message recorded through another subscription (MQTT 5)
    # egress
    "out_polled", "out_published", "out_acked", "out_committed", "out_dead_lettered",
    "out_failed",
    # connection
    "mqtt_connects", "mqtt_disconnects", "mqtt_connect_failures", "mqtt_read_pauses",
)
GAUGES = ("in_pending", "in_pending_max", "out_in_flight", "mqtt_connected", "mqtt_read_paused",
          "edgebus_connected")


class Metrics:
    """Counters and gauges shared by the bridge's threads (one lock; a few increments per
    message)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = dict.fromkeys(COUNTERS + GAUGES, 0)
        self.started = time.time()
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def set(self, name: str, value: int) -> None:
        with self._lock:
            self._values[name] = value
            if name == "in_pending" and value > self._values["in_pending_max"]:
                self._values["in_pending_max"] = value

    def get(self, name: str) -> int:
        with self._lock:
            return self._values[name]

    def error(self, message: str) -> None:
        with self._lock:
            self.last_error, self.last_error_at = message, time.time()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            values = dict(self._values)
            err, err_at = self.last_error, self.last_error_at
        return {"counters": {k: values[k] for k in COUNTERS},
                "gauges": {k: values[k] for k in GAUGES},
                "last_error": err, "last_error_at": err_at}


def write_status(path: Path, doc: dict[str, Any]) -> None:
    """Atomically replace `path` with `doc` as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_status(path: Path) -> dict[str, Any]:
    """The status document, with `running` set from its age. Raises OSError or ValueError."""
    with open(path, "rb") as fh:
        raw = fh.read(MAX_STATUS_BYTES + 1)
    if len(raw) > MAX_STATUS_BYTES:
        raise ValueError(f"{path} is larger than {MAX_STATUS_BYTES} bytes; not a status file")
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError(f"{path} does not hold a status document")
    age = time.time() - float(doc.get("written_at", 0))
    interval = float(doc.get("interval_ms", 2000)) / 1000
    doc["age_s"] = round(age, 1)
    doc["running"] = bool(doc.get("state") == "running" and age <= STALE_INTERVALS * interval)
    return doc


def fetch_status(listen: str, timeout: float = 5.0) -> dict[str, Any]:
    """The status document from a running bridge's endpoint (exporter.py), with `running` set.
    Raises OSError when nothing answers there."""
    import urllib.request

    host, _, port = listen.rpartition(":")
    with urllib.request.urlopen(f"http://{host}:{port}/status", timeout=timeout) as r:
        raw = r.read(MAX_STATUS_BYTES + 1)
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError(f"http://{listen}/status did not answer a status document")
    doc["age_s"] = 0.0
    doc["running"] = doc.get("state") == "running"
    return doc


def status_line(doc: dict[str, Any]) -> str:
    """One line for people: state, connections and the main counters."""
    c, g = doc.get("counters", {}), doc.get("gauges", {})
    state = "running" if doc.get("running") else f"not running ({doc.get('state', '?')}, " \
        f"last written {doc.get('age_s', '?')} s ago)"
    return (f"mqtt bridge {doc.get('client_id', '?')}: {state}; "
            f"mqtt {'up' if g.get('mqtt_connected') else 'down'}, "
            f"edgebus {'up' if g.get('edgebus_connected') else 'down'}; "
            f"in {c.get('in_appended', 0)} appended, {c.get('in_dead_lettered', 0)} dead-lettered, "
            f"{g.get('in_pending', 0)} in flight; out {c.get('out_acked', 0)} delivered, "
            f"{g.get('out_in_flight', 0)} in flight; connects {c.get('mqtt_connects', 0)}")
