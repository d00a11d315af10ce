"""A TCP relay the test controls, between a replicator and its peer: cut the link (both sides
closed), black-hole it (nothing forwarded, nothing closed: a half-open link), restore it."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time


class Relay:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self.blackhole = False  # forward nothing (and accept nothing) while set
        self._stop = False
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                a, _ = self.listener.accept()
            except OSError:
                return
            if self.blackhole:
                self._hold(a)  # a SYN answered, then silence
                continue
            try:
                b = socket.create_connection(self.target, timeout=5)
            except OSError:
                a.close()
                continue
            with self._lock:
                self._pairs.append((a, b))
                self.connections += 1
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _hold(self, s: socket.socket) -> None:
        with self._lock:
            self._pairs.append((s, s))

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while not self._stop:
                r, _, _ = select.select([a, b], [], [], 0.05)
                if self.blackhole:
                    continue  # bytes stay in the kernel buffers; nobody learns anything
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except (OSError, ValueError):  # cut under our feet (a closed socket's fd is -1)
            return
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        """Close every connection now (a peer that went away)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()

    def half_open(self, hold: float) -> None:
        """Forward nothing and close nothing for `hold` seconds (a half-open link, which only a
        heartbeat notices: hold longer than two), then cut: those connections are dead to both
        ends anyway."""
        self.blackhole = True
        time.sleep(hold)
        self.blackhole = False
        self.cut()

    def close(self) -> None:
        self._stop = True
        self.cut()
        self.listener.close()
