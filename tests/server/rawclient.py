"""Raw protocol frames and process probes for supervisor tests that a stock client cannot
drive: a bare socket, hand-built PRODUCE/FETCH frames, the bytes waiting in a socket, a
process's CPU time over an interval."""

from __future__ import annotations

import array
import fcntl
import socket
import time
from pathlib import Path

import psutil

from edgebus import batch as B
from edgebus.client.admin import Admin
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol, ResponseFrame
from edgebus.testing import EmbeddedBroker

REPO = Path(__file__).resolve().parents[2]


def admin(b: EmbeddedBroker) -> Admin:
    return Admin(socket=b.socket, transport="socket")


def raw(b: EmbeddedBroker) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(b.socket)
    return s


def req(api: int, corr: int, body: M.Message) -> bytes:
    return ClientProtocol.encode_request(api, corr, body)


def one_batch(value: bytes = b"x") -> bytes:
    ts = time.time_ns() // 1_000_000
    return B.build_batch([B.encode_record(ts, None, value, ())], ts, ts)


def produce(topic: str, corr: int, acks: int, partition: int = 0, value: bytes = b"x") -> bytes:
    return req(M.Api.PRODUCE, corr, M.ProduceRequest(topic, partition, acks, one_batch(value)))


def read_frames(s: socket.socket, seconds: float, want: int | None = None) -> list[ResponseFrame]:
    """Every response frame that arrives within `seconds` (or until `want` frames)."""
    proto = ClientProtocol()
    out: list[ResponseFrame] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (want is None or len(out) < want):
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = s.recv(1 << 20)
        except TimeoutError:
            break
        if not data:
            break
        proto.receive_data(data)
        while (f := proto.next_response()) is not None:
            out.append(f)
    return out


def inq(s: socket.socket) -> int:
    """Bytes waiting in our receive queue (FIONREAD), without reading them."""
    buf = array.array("i", [0])
    fcntl.ioctl(s.fileno(), 0x541B, buf)  # FIONREAD
    return buf[0]


def cpu_seconds(pid: int, over: float) -> float:
    p = psutil.Process(pid)
    t0 = p.cpu_times()
    time.sleep(over)
    t1 = p.cpu_times()
    return (t1.user + t1.system) - (t0.user + t0.system)


