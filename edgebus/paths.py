"""Default locations of the data directory and the socket.

Root (the systemd service) uses the FHS places; a normal user gets per-user places so that
`edgebus serve` works out of the box without privileges. Environment variables win over both.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_SOCKET = "EDGEBUS_SOCKET"
ENV_DATA_DIR = "EDGEBUS_DATA_DIR"
ENV_CONFIG = "EDGEBUS_CONFIG"
SYSTEM_CONFIG = Path("/etc/edgebus/edgebus.yaml")
# Where the systemd service (systemd/edgebus.service) listens.
SYSTEM_SOCKET = Path("/run/edgebus/edgebus.sock")


def default_data_dir() -> Path:
    if env := os.environ.get(ENV_DATA_DIR):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/edgebus")
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "edgebus"


def default_socket_path() -> Path:
    if env := os.environ.get(ENV_SOCKET):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/edgebus/edgebus.sock")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "edgebus" / "edgebus.sock"
    return Path(f"/tmp/edgebus-{os.getuid()}") / "edgebus.sock"


def client_socket_path() -> Path:
    """The socket a client connects to by default: as default_socket_path(), except that a user
    with no supervisor of their own finds the system service's socket (members of the `edgebus`
    group use the installed service without setting EDGEBUS_SOCKET)."""
    own = default_socket_path()
    if os.environ.get(ENV_SOCKET) or own.exists() or not SYSTEM_SOCKET.exists():
        return own
    return SYSTEM_SOCKET
