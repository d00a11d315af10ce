"""A Unix-socket proxy between a client and the supervisor that loses answers: it forwards
frames both ways and, for every `every`-th PRODUCE answer, closes both connections instead of
forwarding it. The batch was appended; the client never learns it (the lost-ack case an
idempotent producer's resend must not duplicate). While `blackhole` is set, PRODUCE requests
are dropped instead (never appended, never answered)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from pathlib import Path

PRODUCE = 4


class CutProxy:
    def __init__(self, target: str, path: Path, every: int) -> None:
        self.target, self.path, self.every = target, str(path), every
        self.answers = 0  # PRODUCE answers seen
        self.cuts = 0
        self.blackhole = False
        self._lock = threading.Lock()
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._srv.bind(self.path)
        self._srv.listen(16)
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._srv.shutdown(socket.SHUT_RDWR)
        self._srv.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                c, _ = self._srv.accept()
            except OSError:
                return
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                up.connect(self.target)
            except OSError:
                c.close()
                continue
            produces: set[int] = set()
            threading.Thread(target=self._pump, args=(c, up, produces, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, c, produces, False), daemon=True).start()

    @staticmethod
    def _read(s: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            got = s.recv(n - len(buf))
            if not got:
                raise OSError("closed")
            buf += got
        return buf

    def _pump(self, src: socket.socket, dst: socket.socket, produces: set[int], requests: bool) -> None:
        try:
            while True:
                head = self._read(src, 4)
                frame = self._read(src, struct.unpack("<I", head)[0])
                if requests:  # api_key u16, api_version u16, correlation_id u32
                    api, _v, corr = struct.unpack_from("<HHI", frame)
                    if api == PRODUCE:
                        if self.blackhole:
                            continue
                        produces.add(corr)
                else:
                    corr = struct.unpack_from("<I", frame)[0]
                    if corr in produces:
                        produces.discard(corr)
                        with self._lock:
                            self.answers += 1
                            cut = self.answers % self.every == 0
                            self.cuts += cut
                        if cut:
                            raise OSError("cut")
                dst.sendall(head + frame)
        except OSError:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
