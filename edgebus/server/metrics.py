"""Optional Prometheus text endpoint (`metrics: {listen: 127.0.0.1:9464}`).

The endpoint is a service on the supervisor's own event loop, not prometheus-client's HTTP thread:
a scrape then reads the server's structures on the thread that changes them (no locks, no torn
views), costs nothing between scrapes, and a hung loop shows as a failed scrape, which is the
truth. The metric families and the text exposition format are server/promtext.py's (what
prometheus-client writes, without its 8 MB import: issue 16).

Bounds: at most MAX_CLIENTS scrapes at once (the oldest is dropped), requests of at most
MAX_REQUEST_BYTES, one request per connection (Connection: close).
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from edgebus.opsconfig import split_listen
from edgebus.procmetrics import max_fds, self_usage
from edgebus.server import status as S
from edgebus.server.promtext import CONTENT_TYPE, Family, counter, gauge, histogram, render
from edgebus.server.service import LoopApi, Service
from edgebus.version import __version__

log = logging.getLogger("edgebus.metrics")

MAX_CLIENTS = 8
MAX_REQUEST_BYTES = 8192


class BrokerCollector:
    """Fresh metric families at each scrape, from the status document (server/status.py
    collect) plus the fsync histogram's buckets."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def collect(self) -> Iterator[Family]:
        doc = S.collect(self.server)
        stats = self.server.stats
        info = gauge("edgebus_build_info", "edgebus version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield gauge("edgebus_uptime_seconds", "Seconds since the supervisor started",
                    value=time.time() - doc["started_at"])
        yield counter("edgebus_records_in", "Records appended by producers",
                      value=doc["records_in"])
        yield counter("edgebus_bytes_in", "Record batch bytes appended by producers",
                      value=doc["bytes_in"])
        yield counter("edgebus_records_out", "Records sent to consumers",
                      value=doc["records_out"])
        yield counter("edgebus_bytes_out", "Record batch bytes sent to consumers",
                      value=doc["bytes_out"])
        yield histogram("edgebus_fsync_duration_seconds",
                        "Duration of one group-commit fsync round",
                        stats.fsync_cumulative(), stats.fsync_sum)
        running = doc.get("fsync_running")
        yield gauge("edgebus_fsync_in_progress_seconds",
                    "Seconds the running fsync has taken so far (0 when none runs)",
                    value=running["seconds"] if running else 0)
        yield gauge("edgebus_connections", "Connected clients",
                    value=doc["connections"])
        lim = doc["limits"]
        refused = counter("edgebus_connections_refused",
                          "Connections refused, by the limit that refused them",
                          labels=["limit"])
        for limit, n in sorted(lim["refused_connections"].items()):
            refused.add_metric([limit], n)
        yield refused
        yield counter("edgebus_fetches_refused_output_budget",
                      "Fetches refused because queued answers reached "
                      "limits.max_output_total_bytes",
                      value=lim["refused_fetches_output_budget"])
        denied = counter("edgebus_acl_denied",
                         "Requests refused by the access rules, by principal and "
                         "operation", labels=["principal", "operation"])
        for d in doc.get("acl", {}).get("denied", ()):
            denied.add_metric([d["principal"], d["operation"]], d["count"])
        yield denied
        yield gauge("edgebus_output_queued_bytes",
                    "Answer bytes queued for all connections, not yet read by clients",
                    value=lim["output_bytes"])
        # The standard process_* names come from process_families below; these edgebus_process_*
        # ones (from /proc/self, procmetrics.self_usage) stay for the dashboards made before.
        yield gauge("edgebus_process_resident_memory_bytes", "Resident set size",
                    value=doc["rss_bytes"])
        yield counter("edgebus_process_cpu_seconds", "User and system CPU time",
                      value=doc["cpu_s"])
        yield gauge("edgebus_process_open_fds", "Open file descriptors",
                    value=doc["open_fds"])

        d = doc["disk"]
        yield gauge("edgebus_disk_free_bytes",
                    "Free bytes on the data directory's filesystem", value=d["free"])
        yield gauge("edgebus_disk_total_bytes",
                    "Size of the data directory's filesystem", value=d["total"])
        yield gauge("edgebus_disk_low_watermark_bytes",
                    "Free space below which on_disk_full policies apply",
                    value=d["low_watermark"])
        yield gauge("edgebus_disk_high_watermark_bytes",
                    "Free space at which normal service resumes",
                    value=d["high_watermark"])
        yield gauge("edgebus_disk_low", "1 while below the low watermark",
                    value=1 if d["state"] == "low" else 0)
        yield counter("edgebus_disk_rejected_appends",
                      "Appends refused because the disk was low or full",
                      value=d["rejected_appends"])
        yield counter("edgebus_disk_dropped_segments",
                      "Segments deleted by the drop-oldest policy",
                      value=d["dropped_segments"])
        yield gauge("edgebus_disk_read_only",
                    "1 while the data directory's filesystem is mounted read-only",
                    value=1 if d.get("read_only") else 0)
        yield gauge("edgebus_unclean_start",
                    "1 when the previous supervisor did not stop cleanly (killed, crashed, "
                    "power) or nothing says it did (no run marker)",
                    value=1 if doc.get("previous_stop", "clean") != "clean" else 0)
        yield gauge("edgebus_clock_behind_log_seconds",
                    "How far the clock is behind the latest append time (0 unless over a minute)",
                    value=doc.get("clock", {}).get("behind_log_ms", 0) / 1000)
        yield gauge("edgebus_partitions_offline",
                    "Partitions that refuse appends after an I/O error until a restart",
                    value=sum(1 for t in doc["topics"].values() for p in t["partitions"]
                              if p.get("offline")))

        yield from _topic_counters(stats)

        labels = ["topic", "partition"]
        start = gauge("edgebus_log_start_offset", "First offset on disk", labels=labels)
        end = gauge("edgebus_log_end_offset", "Next offset to be written", labels=labels)
        size = gauge("edgebus_log_size_bytes", "Bytes of segments", labels=labels)
        for topic, t in doc["topics"].items():
            for p in t["partitions"]:
                key = [topic, str(p["partition"])]
                start.add_metric(key, p["log_start_offset"])
                end.add_metric(key, p["log_end_offset"])
                size.add_metric(key, p["size_bytes"])
        yield from (start, end, size)
        # One series per offline partition, with the errno that took it offline ("EIO",
        # "EROFS"; "" when it was not an errno): which card error, without reading the log.
        offline = gauge("edgebus_partition_offline",
                        "1 for a partition offline after an I/O error, by the error's errno",
                        labels=[*labels, "errno"])
        for topic, t in doc["topics"].items():
            for p in t["partitions"]:
                if p.get("offline"):
                    offline.add_metric([topic, str(p["partition"]), p.get("offline_errno") or ""],
                                       1)
        yield offline

        lag = gauge("edgebus_consumer_group_lag",
                    "Records between a group's committed offset and the log end",
                    labels=["group", *labels])
        for g in doc["groups"]:
            for part in g["partitions"]:
                if part["lag"] >= 0:
                    lag.add_metric([g["group"], part["topic"], str(part["partition"])], part["lag"])
        yield lag


def process_families() -> list[Family]:
    """The standard process_* metrics, as prometheus-client's ProcessCollector names and computes
    them (/proc/self/stat; the boot time from the clocks, procmetrics.boot_time)."""
    u = self_usage()
    return [gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                  value=u.vsize_bytes),
            gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
                  value=u.rss_bytes),
            gauge("process_start_time_seconds",
                  "Start time of the process since unix epoch in seconds.", value=u.start_time_s),
            counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                    value=u.user_s + u.system_s),
            gauge("process_open_fds", "Number of open file descriptors.", value=u.open_fds),
            gauge("process_max_fds", "Maximum number of open file descriptors.",
                  value=max_fds())]


def _topic_counters(stats: Any) -> Iterator[Family]:
    """Records and bytes in and out per topic (server/stats.py counts them per batch)."""
    for direction, table, what in (("in", stats.topic_in, "appended by producers"),
                                   ("out", stats.topic_out, "sent to consumers")):
        records = counter(f"edgebus_topic_records_{direction}",
                          f"Records {what}, per topic", labels=["topic"])
        nbytes = counter(f"edgebus_topic_bytes_{direction}",
                         f"Record batch bytes {what}, per topic", labels=["topic"])
        for topic, (n, b) in sorted(table.items()):
            records.add_metric([topic], n)
            nbytes.add_metric([topic], b)
        yield records
        yield nbytes


def bind_metrics(listen: str) -> socket.socket:
    """The listening socket of a metrics.listen address (OSError: it cannot be had)."""
    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(16)
    except OSError:
        s.close()
        raise
    s.setblocking(False)
    return s


class MetricsServer(Service):
    """A minimal HTTP/1.1 responder for GET /metrics on the loop. `server` is what the status
    document describes (edgebus.server.broker.Broker).

    It may be down: its address could not be had at the start (a port in use), which is logged
    and does not stop the supervisor. It stays on the loop then, with `error` saying why (the
    status document shows it), and a reload tries its address again (reload_live.py)."""

    name = "metrics"

    def __init__(self, api: LoopApi, server: Any, listen: str) -> None:
        self.api = api
        self.listen_on: str | None = listen  # None: metrics.listen set to null by a reload
        self.collector = BrokerCollector(server)
        self._sock: socket.socket | None = None
        self._clients: OrderedDict[int, _Scrape] = OrderedDict()
        self.scrapes = 0
        self.error: str | None = None  # why it is down (None: serving, or never tried)
        self.error_at: float | None = None  # wall clock of that failure

    @property
    def serving(self) -> bool:
        return self._sock is not None

    def start(self) -> None:
        """Listen on `listen_on`; OSError (kept in `error`) when the address cannot be had."""
        assert self.listen_on is not None
        try:
            sock = bind_metrics(self.listen_on)
        except OSError as e:
            self.error = f"cannot listen on {self.listen_on}: {e.strerror or e}"
            self.error_at = time.time()
            raise
        self.swap(sock, self.listen_on)

    def snapshot(self) -> dict[str, Any]:
        """For the status document: "serving" (with its port), "down" (with why and since when)
        or "off" (metrics.listen null)."""
        if self._sock is not None:
            return {"listen": self.listen_on, "state": "serving", "port": self.port,
                    "error": None, "error_at": None}
        return {"listen": self.listen_on, "state": "down" if self.listen_on else "off",
                "port": None, "error": self.error if self.listen_on else None,
                "error_at": self.error_at if self.listen_on else None}

    def swap(self, sock: socket.socket, listen: str) -> None:
        """Serve from `sock` (from bind_metrics) from now on: a reload's new metrics.listen. The
        old listening socket is closed; scrapes it accepted are answered all the same."""
        if self._sock is not None:
            self.api.unregister(self._sock)
            self._sock.close()
        self._sock, self.listen_on = sock, listen
        self.error = self.error_at = None
        self.api.register(sock, self._on_accept)
        host = split_listen(listen)[0]
        host = f"[{host}]" if ":" in host else host
        log.info("metrics endpoint on http://%s:%d/metrics", host, self.port)

    @property
    def port(self) -> int:
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    def close(self) -> None:
        for c in list(self._clients.values()):
            self._drop(c)
        if self._sock is not None:
            self.api.unregister(self._sock)
            self._sock.close()
            self._sock = None

    # --- on the loop -----------------------------------------------------------------------------
    def _on_accept(self, mask: int) -> None:
        assert self._sock is not None
        while True:
            try:
                s, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("metrics endpoint: accept failed: %s", e)
                return
            s.setblocking(False)
            if len(self._clients) >= MAX_CLIENTS:
                self._drop(next(iter(self._clients.values())))
            c = _Scrape(self, s)
            self._clients[s.fileno()] = c
            self.api.register(s, c.on_event)

    def _drop(self, c: _Scrape) -> None:
        self._clients.pop(c.fd, None)
        self.api.unregister(c.sock)
        c.sock.close()

    def render(self, path: str) -> tuple[str, str, bytes]:
        if path.split("?", 1)[0] in ("/metrics", "/metrics/"):
            self.scrapes += 1
            return "200 OK", CONTENT_TYPE, render([*self.collector.collect(), *process_families()])
        if path == "/":
            body = b"edgebus supervisor: metrics at /metrics\n"
            return "200 OK", "text/plain; charset=utf-8", body
        return "404 Not Found", "text/plain; charset=utf-8", b"not found; try /metrics\n"


class _Scrape:
    def __init__(self, server: MetricsServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.inbuf = bytearray()
        self.out: memoryview | None = None

    def on_event(self, mask: int) -> None:
        try:
            if self.out is None:
                self._read()
            if self.out is not None:
                self._write()
        except OSError:
            self.server._drop(self)

    def _read(self) -> None:
        data = self.sock.recv(4096)
        if not data:
            self.server._drop(self)
            return
        self.inbuf += data
        if b"\r\n\r\n" not in self.inbuf and b"\n\n" not in self.inbuf:
            if len(self.inbuf) > MAX_REQUEST_BYTES:
                self._respond("431 Request Header Fields Too Large", "text/plain", b"too large\n")
            return
        line = bytes(self.inbuf).split(b"\n", 1)[0].decode("latin-1").strip()
        parts = line.split()
        if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
            self._respond("405 Method Not Allowed", "text/plain", b"only GET\n")
            return
        try:
            status, ctype, body = self.server.render(parts[1])
        except Exception:  # a bug in a collector must not take the supervisor down
            log.exception("metrics endpoint: rendering failed")
            status, ctype, body = "500 Internal Server Error", "text/plain", b"error\n"
        self._respond(status, ctype, b"" if parts[0] == "HEAD" else body, len(body))

    def _respond(self, status: str, ctype: str, body: bytes, length: int | None = None) -> None:
        head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body) if length is None else length}\r\n"
                "Connection: close\r\n\r\n").encode("ascii")
        self.out = memoryview(head + body)
        self.server.api.register(self.sock, self.on_event, selectors.EVENT_WRITE)

    def _write(self) -> None:
        assert self.out is not None
        try:
            n = self.sock.send(self.out)
        except BlockingIOError:
            return
        self.out = self.out[n:]
        if not len(self.out):
            self.server._drop(self)
