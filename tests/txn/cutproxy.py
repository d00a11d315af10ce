"""A Unix-socket proxy between a client and the supervisor that loses answers: it forwards
frames both ways and, for every `every`-th PRODUCE answer, closes both connections instead of
forwarding it. The batch was appended; the client never learns it (the lost-ack case an
idempotent producer's resend must not duplicate). While `blackhole` is set, PRODUCE requests
are dropped instead (never appended, never answered)."""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path
from typing import Any

from tests.proxy import Proxy, read_exactly

PRODUCE = 4


class CutProxy(Proxy):
    def __init__(self, target: str, path: Path, every: int) -> None:
        self.every = every
        self.answers = 0  # PRODUCE answers seen
        self.cuts = 0
        self.max_outstanding = 0  # PRODUCE requests of one link unanswered at once, at most
        self.blackhole = False
        self._count = threading.Lock()
        super().__init__(target, unix_path=path)

    def pump(self, src: socket.socket, dst: socket.socket, to_target: bool,
             link: dict[str, Any]) -> None:
        produces: set[int] = link.setdefault("produces", set())
        while True:
            head = read_exactly(src, 4)
            frame = read_exactly(src, struct.unpack("<I", head)[0])
            if to_target:  # api_key u16, api_version u16, correlation_id u32
                api, _v, corr = struct.unpack_from("<HHI", frame)
                if api == PRODUCE:
                    if self.blackhole:
                        continue
                    produces.add(corr)
                    self.max_outstanding = max(self.max_outstanding, len(produces))
            else:
                corr = struct.unpack_from("<I", frame)[0]
                if corr in produces:
                    produces.discard(corr)
                    with self._count:
                        self.answers += 1
                        cut = self.answers % self.every == 0
                        self.cuts += cut
                    if cut:
                        raise OSError("cut")
            dst.sendall(head + frame)
