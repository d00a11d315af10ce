"""systemd notification: READY, STATUS, WATCHDOG pings from the loop itself, STOPPING.

Nothing happens when NOTIFY_SOCKET is unset. The watchdog is pinged from the event loop, so a
loop that hangs stops pinging and systemd restarts the service.
"""

from __future__ import annotations

import os
from typing import Any

import sdnotify


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._n = sdnotify.SystemdNotifier() if self.enabled else None
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        # Ping at half the watchdog period, as sd_watchdog_enabled(3) advises; else a status tick.
        self.interval = usec / 2_000_000 if usec > 0 else 10.0
        self.watchdog = usec > 0

    def _send(self, msg: str) -> None:
        if self._n is not None:
            self._n.notify(msg)

    def ready(self, summary: str) -> None:
        self._send(f"READY=1\nSTATUS={summary}\nMAINPID={os.getpid()}")

    def tick(self, broker: Any) -> None:
        if self.watchdog:
            self._send("WATCHDOG=1")
        if self.enabled:
            self._send(f"STATUS={summary_line(broker)}")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")


def summary_line(broker: Any) -> str:
    topics = broker.logs.topics()
    parts = sum(t.partitions for t in topics.values())
    return (f"{len(topics)} topics, {parts} partitions, {len(broker.conns)} clients, "
            f"{broker.records_in} records in")
