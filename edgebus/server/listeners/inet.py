"""What the TCP listeners (replica, Kafka, HTTP) share: binding a listening socket with clear
errors, the TLS server context, and a peer's address for log lines and status.

ssl is imported only inside server_context: it costs ~5 MB of RSS, and a supervisor with no TLS
listener should not pay it.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING

from edgebus.errors import ConfigError

if TYPE_CHECKING:
    import ssl


def bind_tcp(host: str, port: int, *, setting: str, backlog: int,
             in_use_hint: str = "; choose another port") -> socket.socket:
    """A listening socket on host:port (port 0: one the kernel picks). `setting` names the
    configuration key in the ConfigError for a port already taken or an address not of this
    host."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart while old links linger
    try:
        s.bind((host, port))
    except OSError as e:
        s.close()
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"{setting}: {host}:{port} is already in use by another "
                              f"process{in_use_hint}") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"{setting}: {host} is not an address of this host") from None
        raise
    s.listen(backlog)
    return s


def server_context(cert: str, key: str, ca: str | None, what: str) -> ssl.SSLContext:
    """TLS 1.2+ with the listener's certificate; with `ca`, client certificates are required.
    `what` names the settings in the ConfigError for files that cannot be loaded."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        if ca:
            ctx.load_verify_locations(ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"{what}: cannot load the certificates: {e}") from None
    return ctx


def peer_addr(sock: socket.socket, gone: str = "?") -> str:
    """host:port of the other end; `gone` when it has already gone."""
    try:
        host, port = sock.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return gone
