"""What a reload applies to the running supervisor's parts: `limits:`, the background intervals
of `log:` and `disk:`, and `metrics.listen` (edgebus/server/reload.py calls these on the loop).

Each is safe to change while serving, and takes effect as follows:
- limits.max_connections, max_connections_per_uid: from the next connection; connections
  already open stay (a lower limit closes none, it refuses new ones until enough have gone).
- limits.max_output_buffer_bytes: on every open connection at once (one that the new bound no
  longer holds back is read again); limits.max_input_buffer_bytes: on every connection that has
  the ordinary bound (not a replica link still authenticating, whose bound is smaller).
- limits.max_output_total_bytes, max_fetch_wait_ms, max_topics, max_partitions: from the next
  fetch or topic creation.
- log.*_interval_ms, disk.check_interval_ms: the next run comes at most one new interval from
  now (a shorter one is not waited out behind the old); log.cleaner_io_bytes_per_s at once (a
  cleaning under way too); the disk watermarks at once (free space is checked again).
- metrics.listen: the new address is bound while the file is checked, before anything is
  applied, so an address that cannot be had (a port in use) fails the reload with nothing
  changed and the endpoint stays where it was; else the old listening socket is closed (a
  scrape it accepted is still answered). An endpoint that is down (its address could not be had
  at the start, or at an earlier reload) is tried again by every reload that keeps its address:
  the address may be free now. That retry never fails the reload (the file is not what is
  wrong): it is logged, and the status document's `metrics` says whether it serves and, if not,
  the last error (retry_metrics).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from typing import Any

from edgebus.errors import ConfigError

log = logging.getLogger("edgebus.reload")


def apply_limits(broker: Any, old: Any, new: Any) -> None:
    """`limits:` (edgebus.config.Limits) on the loop, the handlers and the log manager."""
    if old == new:
        return
    loop = broker.loop
    loop.max_connections = new.max_connections
    loop.max_connections_per_uid = new.max_connections_per_uid
    loop.max_output_total = new.max_output_total_bytes
    loop.output_budget_used = loop.output_bytes >= new.max_output_total_bytes
    broker.data.max_fetch_wait_ms = new.max_fetch_wait_ms
    broker.logs.max_topics, broker.logs.max_partitions = new.max_topics, new.max_partitions
    old_in, loop.max_input_buffer = loop.max_input_buffer, new.max_input_buffer_bytes
    loop.max_output_buffer = new.max_output_buffer_bytes
    for conn in list(loop.conns.values()):
        if conn.max_input == old_in:  # not a bound of its own (a replica link's before auth)
            conn.max_input = new.max_input_buffer_bytes
        conn.max_output = new.max_output_buffer_bytes
        was = conn.overloaded
        conn.overloaded = conn.out_bytes > conn.max_output
        if was and not conn.overloaded and not conn.closed:
            loop.resume(conn)  # read again: its requests waited for room
    log.info("reload: limits: %s", ", ".join(
        f"{k} {getattr(old, k)} -> {getattr(new, k)}" for k in _changed(old, new)))


def apply_intervals(broker: Any, old_log: Any, new_log: Any, old_disk: Any, new_disk: Any) -> None:
    """The background intervals of `log:` and the `disk:` section."""
    if old_log != new_log:
        broker.housekeeping.set_intervals(new_log.flush_interval_ms, new_log.checkpoint_interval_ms,
                                          new_log.retention_check_interval_ms)
        broker.cleaner.set_pace(new_log.cleaner_interval_ms, new_log.cleaner_io_bytes_per_s)
        log.info("reload: log: %s", ", ".join(
            f"{k} {getattr(old_log, k)} -> {getattr(new_log, k)}"
            for k in _changed(old_log, new_log)))
    if old_disk != new_disk:
        broker.disk.apply_settings(new_disk)
        log.info("reload: disk: %s", ", ".join(
            f"{k} {getattr(old_disk, k)} -> {getattr(new_disk, k)}"
            for k in _changed(old_disk, new_disk)))


def bind_metrics_listen(running: str | None, new: str | None,
                        up: bool = True) -> socket.socket | None:
    """The new metrics.listen's socket, bound now (None: no new address). ConfigError naming
    the address when it cannot be had: the running endpoint is kept (`up`: it serves)."""
    if new is None or new == running:
        return None
    from edgebus.server.metrics import bind_metrics

    try:
        return bind_metrics(new)
    except OSError as e:
        where = (f"the endpoint stays on {running}" if running and up else
                 f"the endpoint stays down (on {running})" if running else "no endpoint is served")
        raise ConfigError(f"metrics.listen: cannot listen on {new}: {e.strerror or e}; "
                          f"{where}") from None


def retry_metrics(server: Any) -> None:
    """A reload that keeps metrics.listen: start the endpoint if it is down (it could not have
    its address before). Failing again is logged and kept in its status, not a reload error."""
    if server is None or server.serving or server.listen_on is None:
        return
    was = server.error
    try:
        server.start()
    except OSError as e:
        log.error("reload: metrics.listen %s still cannot be had (%s): the metrics endpoint "
                  "stays down", server.listen_on, e.strerror or e)
        return
    log.info("reload: the metrics endpoint is up (before: %s)", was)


def apply_metrics_listen(broker: Any, server: Any, new: str | None,
                         sock: socket.socket | None) -> Any:
    """Serve metrics on `sock` (from bind_metrics_listen) or stop serving them (`new` None).
    Returns the MetricsServer now serving, or None."""
    if new is None:
        if server is not None and server.listen_on is not None:
            server.close()
            server.listen_on = None
            log.info("reload: metrics.listen is null: the metrics endpoint is closed")
        return server
    if sock is None:
        return server
    if server is None:
        from edgebus.server.metrics import MetricsServer

        server = MetricsServer(broker.loop, broker, new)
        broker.add_service(server)
    server.swap(sock, new)
    return server


def _changed(old: Any, new: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(new, f.name)]
