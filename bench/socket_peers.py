"""The bare Unix socket as a system under test (bench/peers.py's adapter shape): u32-length
frames with batched writes, the floor for any socket protocol in Python, and the same with a
`socat` relay in the middle, the floor for any system with a process in between. Re-exported by
bench/peers.py (peers.UnixSocket, peers.SocatRelay).
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.peers import Ctx

_LEN = struct.Struct("<I")


# --- raw Unix socket, length-prefixed frames -----------------------------------------------------
class UnixSocket:
    """The floor for any socket protocol in Python: u32 length + bytes, batched writes."""

    def setup(self, ctx: Ctx) -> None:
        d = tempfile.mkdtemp(prefix="ebb-", dir="/tmp")
        ctx.data["dir"] = d
        ctx.data["paths"] = [os.path.join(d, f"c{i}.sock") for i in range(ctx.consumers)]

    def teardown(self, ctx: Ctx) -> None:
        shutil.rmtree(ctx.data["dir"], ignore_errors=True)

    @staticmethod
    def producer(ctx: Ctx, i: int) -> Any:
        socks = []
        # A relay in between (SocatRelay): the producer writes to the relay's sockets instead.
        for path in ctx.data.get("send_paths", {}).get(i, ctx.data["paths"]):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            for _ in range(500):
                try:
                    s.connect(path)
                    break
                except OSError:
                    time.sleep(0.01)
            socks.append(s)

        class P:
            def send(self, payload: bytes) -> None:
                data = _LEN.pack(len(payload)) + payload
                for s in socks:
                    s.sendall(data)

            def send_many(self, payloads: list[bytes]) -> None:
                data = b"".join(_LEN.pack(len(x)) + x for x in payloads)
                for s in socks:
                    s.sendall(data)

            def flush(self) -> None:
                pass

            def close(self) -> None:
                for s in socks:
                    s.close()

        return P()

    @staticmethod
    def consumer(ctx: Ctx, i: int) -> Any:
        path = ctx.data["paths"][i]
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ls.bind(path)
        ls.listen(16)
        expect = ctx.producers
        sel = selectors.DefaultSelector()
        bufs: dict[int, bytearray] = {}
        ls.setblocking(False)
        sel.register(ls, selectors.EVENT_READ, "listen")

        class C:
            def recv(self, timeout: float) -> list[bytes]:
                out: list[bytes] = []
                for key, _ in sel.select(timeout):
                    if key.data == "listen":
                        s, _ = ls.accept()
                        bufs[s.fileno()] = bytearray()
                        sel.register(s, selectors.EVENT_READ, s)
                        if len(bufs) == expect:
                            sel.unregister(ls)
                        continue
                    s = key.data
                    data = s.recv(1 << 20)
                    if not data:
                        sel.unregister(s)
                        continue
                    buf = bufs[s.fileno()]
                    buf += data
                    pos, end = 0, len(buf)
                    while end - pos >= 4:
                        n = _LEN.unpack_from(buf, pos)[0]
                        if end - pos - 4 < n:
                            break
                        out.append(bytes(buf[pos + 4 : pos + 4 + n]))
                        pos += 4 + n
                    del buf[:pos]
                return out

            def close(self) -> None:
                ls.close()

        return C()


# --- a relay: the bare socket with a process in the middle ----------------------------------------
# socat's -b: a read takes whatever has arrived, up to this (one record or more, as a broker's
# read does); EDGEBUS_BENCH_RELAY_BUFFER=104 makes it one read per 100 B record (its frame).
SOCAT_BUFFER = int(os.environ.get("EDGEBUS_BENCH_RELAY_BUFFER", 65536))


class SocatRelay(UnixSocket):
    """The bare Unix socket with `socat -u` between producer and consumer: a process that does
    nothing but forward bytes, woken once per write that reaches it, like a broker. Its CPU per
    message is the floor for any system with a process in the middle on this machine.

    socat reads whatever is queued (up to -b bytes) and writes it on at once: there is no
    timer or fill level to wait for (-T is an idle timeout only, unset here), so paced writes
    are forwarded one by one; the row's `server_syscr_per_msg` / `server_syscw_per_msg` show it.
    One socat per (producer, consumer) pair; the consumer side is UnixSocket's, unchanged."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    @staticmethod
    def available() -> str | None:
        if shutil.which("socat") is None:
            return "socat is not installed (./scripts/quickstart bench installs it)"
        return None

    def setup(self, ctx: Ctx) -> None:
        super().setup(ctx)
        d = ctx.data["dir"]
        send_paths: dict[int, list[str]] = {}
        exe = shutil.which("socat") or "socat"
        for p in range(ctx.producers):
            for c, target in enumerate(ctx.data["paths"]):
                relay = os.path.join(d, f"r{p}-{c}.sock")
                send_paths.setdefault(p, []).append(relay)
                # -u: one direction only; it exits once the producer closes and the rest is sent.
                self.procs.append(subprocess.Popen(
                    [exe, "-u", "-b", str(SOCAT_BUFFER), f"UNIX-LISTEN:{relay}",
                     f"UNIX-CONNECT:{target}"], stdout=subprocess.DEVNULL))
        ctx.data["send_paths"] = send_paths
        for relay in (x for paths in send_paths.values() for x in paths):
            for _ in range(500):  # listening before any producer connects
                if os.path.exists(relay):
                    break
                time.sleep(0.01)

    def server_pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def teardown(self, ctx: Ctx) -> None:
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs = []
        super().teardown(ctx)
