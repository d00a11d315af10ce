"""Who owns the client end of a loopback TCP connection, as identd answers it.

A local program that connects over loopback TCP (a Kafka client without SASL) has no
SO_PEERCRED, but the kernel lists both ends of the connection in /proc/net/tcp (tcp6 for IPv6
and IPv4-mapped addresses), each with the uid of the socket's owner. The client's end is the row
whose local address is the peer's address and whose remote address is ours. Only loopback peers
are looked up: a remote host's sockets are not in this table, and a row that merely looks like one
must not name a local user for it. The table is that of the supervisor's network namespace.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

_U32 = struct.Struct("=I")  # the kernel prints each 32-bit word of an address in host order
MAX_ROWS = 1_000_000  # a bound on what one lookup reads (a host with a million sockets is odd)

Address = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]


def _addr(field: str) -> Address:
    host, _, port = field.partition(":")
    raw = b"".join(_U32.pack(int(host[i:i + 8], 16)) for i in range(0, len(host), 8))
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip, int(port, 16)


def _norm(host: str, port: int) -> Address:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip, port


def owner_uid(client: tuple[str, int], server: tuple[str, int],
              tables: tuple[str, ...] = ("/proc/net/tcp", "/proc/net/tcp6")) -> int | None:
    """The uid owning the TCP socket bound to `client` and connected to `server` (host, port);
    None when the client is not on loopback or no such socket is listed."""
    c, s = _norm(*client[:2]), _norm(*server[:2])
    if not c[0].is_loopback:
        return None
    # The kernel prints ports as four upper-case hex digits: rows with other ports are skipped
    # before their addresses are parsed (a busy host lists hundreds of sockets; parsing each
    # row's addresses cost about 10 us, milliseconds per lookup).
    c_port, s_port = f":{c[1]:04X}", f":{s[1]:04X}"
    for path in tables:
        try:
            with open(path) as f:
                next(f, None)  # the header line
                for i, line in enumerate(f):
                    if i >= MAX_ROWS:
                        break
                    cols = line.split()
                    if len(cols) < 8 or not (cols[1].endswith(c_port) and cols[2].endswith(s_port)):
                        continue
                    if _addr(cols[1]) == c and _addr(cols[2]) == s:
                        return int(cols[7])
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
    return None


def peer_uid(sock: socket.socket) -> int | None:
    """owner_uid for an accepted TCP socket (None if it is gone or not on loopback)."""
    try:
        return owner_uid(sock.getpeername()[:2], sock.getsockname()[:2])
    except OSError:
        return None
