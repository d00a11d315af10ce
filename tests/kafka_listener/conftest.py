"""Kafka-listener fixtures: a real supervisor with its Kafka listener on a free port, and raw
Kafka frames for the tests that speak the protocol byte by byte."""

from __future__ import annotations

import io
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest
from kio.serial import entity_reader, entity_writer

from edgebus import Admin
from edgebus.testing import EmbeddedBroker


@pytest.fixture
def kbroker(make_broker: Callable[..., EmbeddedBroker]) -> EmbeddedBroker:
    return make_broker().start()


def create_topic(broker: EmbeddedBroker, name: str, partitions: int = 1, **config: Any) -> None:
    with Admin(socket=broker.socket) as a:
        a.create_topic(name, partitions=partitions, config=config or None)


def raw_request(api_key: int, version: int, corr: int, body: Any, client_id: str = "raw",
                flexible: bool | None = None) -> bytes:
    """A whole request frame: length, header (v2 if flexible, else v1), the kio body."""
    buf = io.BytesIO()
    buf.write(struct.pack(">hhih", api_key, version, corr, len(client_id)))
    buf.write(client_id.encode())
    if flexible if flexible is not None else getattr(body, "__flexible__", False):
        buf.write(b"\x00")
    entity_writer(type(body))(buf, body)
    payload = buf.getvalue()
    return struct.pack(">i", len(payload)) + payload


def read_frame(s: socket.socket) -> bytes:
    """One response frame without its length; b"" when the server closed the connection."""
    head = _read(s, 4)
    if len(head) < 4:
        return b""
    n = struct.unpack(">i", head)[0]
    return _read(s, n)


def _read(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            return out
        out += d
    return out


def parse_response(frame: bytes, entity: type, flexible_header: bool) -> tuple[int, Any]:
    corr = struct.unpack(">i", frame[:4])[0]
    off = 5 if flexible_header else 4
    body, _ = entity_reader(entity)(frame, off)
    return corr, body


def connect(broker: EmbeddedBroker) -> socket.socket:
    host, port = broker.kafka_bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    return s
