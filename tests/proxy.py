"""A relay between clients and a server that a test controls: the one accept-connect-forward loop
behind the tests' fault proxies (replication/relay.py, txn/cutproxy.py, the Kafka crash test's).

Each accepted client gets its own connection to the target and a thread per direction running
`pump`; a subclass overrides `pump` to look at, hold back or drop what passes, and `admit` to
take a client in without connecting it. `cut()` closes every relayed connection (a peer that
went away); `close()` also stops accepting."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path
from typing import Any


class Proxy:
    def __init__(self, target: tuple[str, int] | str, unix_path: Path | str | None = None) -> None:
        """target: (host, port) for TCP, or a Unix socket path. Listens on a free loopback port
        (`port`, `address`), or on the Unix socket `unix_path` when given."""
        self.target = target
        if unix_path is None:
            self.listener = socket.create_server(("127.0.0.1", 0))
            self.port = self.listener.getsockname()[1]
            self.address = f"127.0.0.1:{self.port}"
        else:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(str(unix_path))
            self.listener.listen(16)
            self.address = str(unix_path)
        self.connections = 0  # clients connected through to the target
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    # --- for subclasses ----------------------------------------------------------------------------
    def admit(self, client: socket.socket) -> bool:
        """False: do not connect this client (the subclass keeps or closes it)."""
        return True

    def pump(self, src: socket.socket, dst: socket.socket, to_target: bool,
             link: dict[str, Any]) -> None:
        """Forward src to dst until either ends (OSError ends it too). `link` is shared by the
        two directions of one client's connection."""
        while data := src.recv(65536):
            dst.sendall(data)

    def hold(self, s: socket.socket) -> None:
        """Keep s open, unanswered, until the next cut."""
        with self._lock:
            self._socks.append(s)

    # --- control -----------------------------------------------------------------------------------
    def cut(self) -> None:
        """Close every relayed connection now."""
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            _shut(s)

    def close(self) -> None:
        self._closed = True
        self.cut()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    # --- the loop ----------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                a, _ = self.listener.accept()
            except OSError:
                return
            if not self.admit(a):
                continue
            try:
                if isinstance(self.target, str):
                    b = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    b.connect(self.target)
                else:
                    b = socket.create_connection(self.target, timeout=5)
                    b.settimeout(None)
            except OSError:
                a.close()
                continue
            with self._lock:
                self._socks += [a, b]
                self.connections += 1
            link: dict[str, Any] = {}
            threading.Thread(target=self._run, args=(a, b, True, link), daemon=True).start()
            threading.Thread(target=self._run, args=(b, a, False, link), daemon=True).start()

    def _run(self, src: socket.socket, dst: socket.socket, to_target: bool,
             link: dict[str, Any]) -> None:
        try:
            self.pump(src, dst, to_target, link)
        except (OSError, ValueError):  # cut under our feet (a closed socket's fd is -1)
            pass
        finally:
            for s in (src, dst):
                _shut(s)


def _shut(s: socket.socket) -> None:
    # shutdown first: it wakes the other direction's thread blocked in recv on the same socket
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


def read_exactly(s: socket.socket, n: int) -> bytes:
    """n bytes from s; OSError when it closes first."""
    buf = b""
    while len(buf) < n:
        got = s.recv(n - len(buf))
        if not got:
            raise OSError("closed")
        buf += got
    return buf
