"""systemd's notify protocol (sd_notify(3)) through sdnotify: READY, STATUS, WATCHDOG, STOPPING.

- READY=1 is sent once, by the supervisor, after recovery and after the socket listens, so a unit
  ordered After=edgebus.service starts when clients can connect.
- WATCHDOG=1 is sent from the event loop itself (`Watchdog`, a service on the loop, calls
  `tick`): a loop that hangs stops pinging and systemd kills and restarts the service
  (WatchdogSec= in the unit).
- STATUS= carries a one-line summary (`systemctl status edgebus` shows it).
- STOPPING=1 when a clean shutdown begins.
- RELOADING=1 when a SIGHUP reload begins, READY=1 when it is done (edgebus/server/reload.py).

Nothing at all happens when NOTIFY_SOCKET is unset (not started by systemd); the watchdog is used
only when WATCHDOG_USEC is set and WATCHDOG_PID, if set, is this process (sd_watchdog_enabled(3)).
"""

from __future__ import annotations

import os
import time
from typing import Any

import sdnotify

from edgebus.server.disk import human
from edgebus.server.service import Service

# Without a watchdog, STATUS= is refreshed this often (seconds) while systemd listens.
STATUS_INTERVAL_S = 10.0
# Not under systemd: tick has nothing to do, so the loop need not wake for it.
IDLE_INTERVAL_S = 3600.0


class Notifier:
    def __init__(self, environ: Any = None) -> None:
        env = os.environ if environ is None else environ
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self._n = sdnotify.SystemdNotifier() if self.enabled else None
        usec = _int(env.get("WATCHDOG_USEC"))
        pid = _int(env.get("WATCHDOG_PID"))
        self.watchdog = self.enabled and usec > 0 and pid in (0, os.getpid())
        self.watchdog_s = usec / 1_000_000 if self.watchdog else None
        # Ping at half the watchdog period, as sd_watchdog_enabled(3) advises.
        if self.watchdog:
            self.interval = usec / 2_000_000
        else:
            self.interval = STATUS_INTERVAL_S if self.enabled else IDLE_INTERVAL_S
        self.sent = 0

    def _send(self, msg: str) -> None:
        if self._n is not None:
            self._n.notify(msg)
            self.sent += 1

    def status(self, text: str) -> None:
        self._send(f"STATUS={_one_line(text)}")

    def ready(self, summary: str) -> None:
        self._send(f"READY=1\nSTATUS={_one_line(summary)}\nMAINPID={os.getpid()}")

    def tick(self, broker: Any) -> None:
        """From the event loop, every `interval` seconds."""
        if self.watchdog:
            self._send("WATCHDOG=1")
        if self.enabled:
            self._send(f"STATUS={_one_line(summary_line(broker))}")

    def reloading(self) -> None:
        # MONOTONIC_USEC: systemd (253+) matches the message to the reload it asked for.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the config file")

    def reloaded(self) -> None:
        self._send("READY=1\nSTATUS=reloaded the config file")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping: answering waiters and flushing the log")


class Watchdog(Service):
    timer_static = True  # its time moves in tick() only
    """The notifier on the loop: `Notifier.tick` every `interval`, STOPPING=1 at shutdown."""

    def __init__(self, notifier: Notifier, server: Any) -> None:
        self.notifier = notifier
        self.server = server  # what summary_line describes (edgebus.server.broker.Broker)
        self._next = time.monotonic()  # the first ping at once

    def next_deadline(self) -> float | None:
        return self._next

    def tick(self, now: float) -> None:
        self.notifier.tick(self.server)
        self._next = now + self.notifier.interval

    def shutdown(self) -> None:
        self.notifier.stopping()


def summary_line(broker: Any) -> str:
    topics = {n: t for n, t in broker.logs.topics().items() if not n.startswith("__")}
    parts = sum(t.partitions for t in topics.values())
    line = (f"{len(topics)} topics, {parts} partitions, {len(broker.loop.conns)} clients, "
            f"{broker.stats.records_in} records in")
    disk = getattr(broker, "disk", None)
    if disk is not None and disk.total:
        line += f", disk {human(disk.free)} free"
        if disk.low:
            line += " (LOW: reject topics refuse appends)"
        if disk.read_only:
            line += " (READ-ONLY filesystem)"
        if disk.full:
            line += " (FULL)"
    hk = getattr(broker, "housekeeping", None)
    stalled = hk.fsync.running() if hk is not None else None
    if hk is not None and stalled is not None and stalled[1] >= hk.fsync.warn_s:
        line += f", fsync of {stalled[0]} STALLED for {stalled[1]:.0f} s"
    offline = sum(1 for p in broker.logs.all_partitions() if p.offline)
    if offline:
        line += f", {offline} partition(s) OFFLINE"
    return line


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())
