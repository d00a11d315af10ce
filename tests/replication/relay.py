"""A TCP relay the test controls, between a replicator and its peer: cut the link (both sides
closed), black-hole it (nothing forwarded, nothing closed: a half-open link), restore it."""

from __future__ import annotations

import select
import socket
import time
from typing import Any

from tests.proxy import Proxy


class Relay(Proxy):
    def __init__(self, target: tuple[str, int]) -> None:
        self.blackhole = False  # forward nothing (and accept nothing) while set
        super().__init__(target)

    def admit(self, client: socket.socket) -> bool:
        if self.blackhole:
            self.hold(client)  # a SYN answered, then silence
            return False
        return True

    def pump(self, src: socket.socket, dst: socket.socket, to_target: bool,
             link: dict[str, Any]) -> None:
        while not self._closed:
            r, _, _ = select.select([src], [], [], 0.05)
            if self.blackhole or not r:
                continue  # bytes stay in the kernel buffers; nobody learns anything
            data = src.recv(65536)
            if not data:
                return
            dst.sendall(data)

    def half_open(self, hold: float) -> None:
        """Forward nothing and close nothing for `hold` seconds (a half-open link, which only a
        heartbeat notices: hold longer than two), then cut: those connections are dead to both
        ends anyway."""
        self.blackhole = True
        time.sleep(hold)
        self.blackhole = False
        self.cut()
