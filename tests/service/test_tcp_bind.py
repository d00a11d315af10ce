"""The TCP listeners' shared bind (edgebus/server/listeners/inet.py): a taken port and an address
not of this host are ConfigErrors naming the setting, for every listener."""

from __future__ import annotations

import socket

import pytest

from edgebus.errors import ConfigError
from edgebus.server.listeners.inet import bind_tcp, peer_addr


def test_port_taken_names_the_setting() -> None:
    s = bind_tcp("127.0.0.1", 0, setting="replica.listen", backlog=1)
    try:
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^http\.listen: 127\.0\.0\.1:{port} is already in "
                                              r"use by another process; choose another port$"):
            bind_tcp("127.0.0.1", port, setting="http.listen", backlog=1)
    finally:
        s.close()


def test_address_not_of_this_host_names_the_setting() -> None:
    # 192.0.2.0/24 is TEST-NET-1: never an address of a host.
    with pytest.raises(ConfigError, match=r"^replica\.listen: 192\.0\.2\.1 is not an address of "
                                          r"this host$"):
        bind_tcp("192.0.2.1", 0, setting="replica.listen", backlog=1)


def test_peer_addr_of_a_connection_and_of_one_gone() -> None:
    srv = bind_tcp("127.0.0.1", 0, setting="x", backlog=1)
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    try:
        assert peer_addr(conn) == f"127.0.0.1:{cli.getsockname()[1]}"
        lone = socket.socket()
        assert peer_addr(lone, "gone") == "gone"
        lone.close()
    finally:
        for s in (cli, conn, srv):
            s.close()
