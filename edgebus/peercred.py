"""Who is on the other end of a Unix socket, and whom a client trusts to serve it.

The kernel names a Unix socket's peer (SO_PEERCRED: pid, uid, gid as of connect/listen), so
neither side has to believe anything the other says. The supervisor uses it to identify its
clients and to name a process already serving its socket; a client uses it to refuse a socket
served by someone who is not the supervisor's user before it sends a byte (another local user
could have put a socket at the path: issue 14, socket squatting).
"""

from __future__ import annotations

import functools
import os
import pwd
import socket
import struct

from edgebus.tuning import ENV_SUPERVISOR_USER

# The system service's user (systemd/edgebus.service User=, edgebus.sysusers.conf).
SERVICE_USER = "edgebus"

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_cred(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer of a connected Unix socket, as the kernel names it; OSError
    if the socket has none."""
    pid, uid, gid = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return pid, uid, gid


@functools.lru_cache(maxsize=8)
def _uid_of(user: str) -> int | None:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def trusted_supervisor_uids() -> frozenset[int]:
    """The uids a client lets serve its socket: its own, root's, the system service user's,
    and the user named in $EDGEBUS_SUPERVISOR_USER."""
    uids = {os.geteuid(), 0}
    for user in (SERVICE_USER, os.environ.get(ENV_SUPERVISOR_USER, "").strip()):
        if user and (uid := _uid_of(user)) is not None:
            uids.add(uid)
    return frozenset(uids)


def describe_process(pid: int) -> str:
    """'pid 123 (edgebus serve --data-dir D2)' from /proc, or just 'pid 123' when hidden."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read(4096).rstrip(b"\0").split(b"\0")
    except OSError:
        return f"pid {pid}"
    text = " ".join(a.decode("utf-8", "replace") for a in args if a)
    return f"pid {pid} ({text[:200]})" if text else f"pid {pid}"


def user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
