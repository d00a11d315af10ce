"""The identd-style owner lookup of a loopback TCP peer (edgebus/acl/procnet.py), against real
connections: this process's own, another local user's (IPv4 and IPv6), and a non-loopback peer."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from edgebus.acl.procnet import owner_uid, peer_uid
from tests.security.conftest import CHILD_BOUND_S, Users

# Run as the other user: connect, say the local port, hold the connection until stdin closes.
HOLD = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


def listener(family: int, host: str) -> socket.socket:
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((host, 0))
    srv.listen(4)
    srv.settimeout(30)
    return srv


def test_own_loopback_connection_is_ours() -> None:
    with listener(socket.AF_INET, "127.0.0.1") as srv:
        c = socket.create_connection(srv.getsockname()[:2])
        a, _ = srv.accept()
        try:
            assert peer_uid(a) == os.geteuid()
            # The accepted end is the supervisor's; the lookup must find the client's row, not it.
            assert owner_uid(c.getsockname(), c.getpeername()) == os.geteuid()
            assert owner_uid(("127.0.0.1", 1), srv.getsockname()) is None  # no such socket
        finally:
            a.close()
            c.close()


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"),
                                              (socket.AF_INET6, "::1")])
def test_another_users_loopback_connection_names_that_user(users: Users, family: int,
                                                          host: str) -> None:
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    other = users.add("ebtcp")
    with listener(family, host) as srv:
        p = users.popen(other, ["python", "-c", HOLD, host, str(srv.getsockname()[1])],
                        stdin=subprocess.PIPE)
        try:
            a, peer = srv.accept()
            assert p.stdout is not None
            assert int(p.stdout.readline()) == peer[1]
            assert peer_uid(a) == other.uid != os.geteuid()
            a.close()
        finally:
            p.communicate("", timeout=CHILD_BOUND_S)


def test_a_peer_off_loopback_is_never_looked_up() -> None:
    # Whatever the table holds, an address that is not loopback gets no local user.
    assert owner_uid(("192.0.2.7", 40000), ("192.0.2.1", 9092)) is None
    assert owner_uid(("::ffff:10.0.0.1", 40000), ("10.0.0.2", 9092)) is None
