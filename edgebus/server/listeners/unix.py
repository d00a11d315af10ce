"""The client listener: the Unix socket (`socket:` in the config), peers known by SO_PEERCRED."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from edgebus.server.listeners.stream import StreamListener

if TYPE_CHECKING:
    from edgebus.server.loop import Loop

_PEERCRED = struct.Struct("3i")


class UnixListener(StreamListener):
    name = "unix"

    def __init__(self, loop: Loop, path: Path, mode: int = 0o660) -> None:
        super().__init__(loop)
        self.path = Path(path)
        self.mode = mode

    def bind(self) -> socket.socket:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            # A socket file left by a crashed supervisor; the data-dir lock proves no one serves it.
            path.unlink()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o777 & ~self.mode)
        try:
            s.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, self.mode)
        s.listen(128)
        return s

    def peer(self, sock: socket.socket) -> tuple[int, int]:
        """(pid, uid) of the peer as the kernel names it (never from /proc)."""
        try:
            pid, uid, _gid = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
            return pid, uid
        except OSError:
            return -1, -1

    def shutdown(self) -> None:
        listening = self.sock is not None
        super().shutdown()
        if listening:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
