"""The client listener: the Unix socket (`socket:` in the config), peers known by SO_PEERCRED.

The path is claimed safely (listeners/socket_claim.py): a directory nobody else can write, never
a live socket taken over, never someone else's socket removed at exit.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING

from edgebus.peercred import peer_cred
from edgebus.server.listeners.socket_claim import SocketClaim
from edgebus.server.listeners.stream import StreamListener

if TYPE_CHECKING:
    from edgebus.server.loop import Loop


class UnixListener(StreamListener):
    name = "unix"

    def __init__(self, loop: Loop, path: Path, mode: int = 0o660,
                 claim: SocketClaim | None = None) -> None:
        super().__init__(loop)
        self.path = Path(path)
        self.mode = mode
        # Acquired early by the supervisor (before recovery) or, without one, at bind.
        self.claim = claim if claim is not None else SocketClaim(self.path, mode)

    def bind(self) -> socket.socket:
        return self.claim.bind()

    def peer(self, sock: socket.socket) -> tuple[int, int]:
        """(pid, uid) of the peer as the kernel names it (never from /proc)."""
        try:
            pid, uid, _gid = peer_cred(sock)
            return pid, uid
        except OSError:
            return -1, -1

    def shutdown(self) -> None:
        super().shutdown()
        self.claim.release()  # removes the socket only if the path still holds ours
