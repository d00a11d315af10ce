"""Value types of the configuration's operations sections (`disk:`, `metrics:`, a topic's
`on_disk_full`), kept apart from edgebus/config.py so that the file's mapping machinery stays small.

Each parser takes the raw YAML value and returns the typed value, or raises ValueError with a
message that does not name the key (edgebus/config.py adds the key path).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from edgebus.log.topic_config import DISK_FULL_DROP_OLDEST, DISK_FULL_REJECT

DISK_FULL_POLICIES = (DISK_FULL_REJECT, DISK_FULL_DROP_OLDEST)
_PERCENT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*%\s*")
_HOST_PORT = re.compile(r"\s*(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):([0-9]{1,5})\s*")
# The metrics endpoint has no authentication, so it may only listen where only this host reaches.
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class Threshold:
    """An amount of free space: a number of bytes, or a percentage of the filesystem's size."""

    bytes: int | None = None
    percent: float | None = None

    def __post_init__(self) -> None:
        if (self.bytes is None) == (self.percent is None):
            raise ValueError("a threshold is either bytes or a percentage")

    def resolve(self, total: int) -> int:
        """The threshold in bytes on a filesystem of `total` bytes."""
        if self.bytes is not None:
            return self.bytes
        assert self.percent is not None
        return int(total * self.percent / 100)

    def __str__(self) -> str:
        if self.percent is not None:
            return f"{self.percent:g}%"
        return str(self.bytes)


def parse_threshold(value: Any, parse_size: Any) -> Threshold:
    """A Threshold from "5%", "2.5%", a size like "256MiB", or a number of bytes."""
    if isinstance(value, str) and (m := _PERCENT.fullmatch(value)):
        pct = float(m.group(1))
        if not 0 <= pct < 100:
            raise ValueError(f"a percentage must be at least 0 and below 100, got {value!r}")
        return Threshold(percent=pct)
    try:
        n = parse_size(value)
    except ValueError:
        raise ValueError(
            f"expected free space as a size (bytes, '256MiB') or a percentage ('5%'), got {value!r}"
        ) from None
    if n < 0:
        raise ValueError(f"free space cannot be negative, got {n}")
    return Threshold(bytes=n)


CLEANUP_POLICIES = ("delete", "compact", "compact,delete")


def parse_cleanup_policy(value: Any) -> str:
    """Kafka's cleanup.policy: "delete", "compact", or both ("compact,delete" in any order)."""
    if isinstance(value, str):
        word = ",".join(sorted(w.strip() for w in value.split(",")))
        if word in CLEANUP_POLICIES:
            return word
    raise ValueError(f"expected one of {', '.join(CLEANUP_POLICIES)}, got {value!r}")


def parse_disk_policy(value: Any) -> str:
    if isinstance(value, str) and value.strip() in DISK_FULL_POLICIES:
        return value.strip()
    raise ValueError(f"expected one of {', '.join(DISK_FULL_POLICIES)}, got {value!r}")


# A node's name (replication): what its peers' mirror topics record as their source.
NODE_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def parse_listen(value: Any, loopback_only: bool = True) -> str | None:
    """`host:port` on a loopback address ("127.0.0.1:9464", "[::1]:9464", "localhost:9464"), or
    None (null or an empty string) for no endpoint."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    m = _HOST_PORT.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"expected host:port such as '127.0.0.1:9464', got {value!r}")
    host, port = m.group(1).strip("[]"), int(m.group(2))
    if not 0 <= port <= 65535:  # 0: any free port (tests; the log line names the one chosen)
        raise ValueError(f"port must be between 0 and 65535, got {port}")
    if loopback_only and host not in LOOPBACK_NAMES:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(
                f"{host!r} is not a loopback address; the metrics endpoint has no authentication, "
                "so it listens on localhost only (scrape it through a proxy or an SSH tunnel)"
            )
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_replica_listen(value: Any) -> str | None:
    """The replica listener's host:port, any address (config.py refuses a non-loopback one
    without TLS)."""
    return parse_listen(value, loopback_only=False)


def is_loopback_listen(listen: str) -> bool:
    host = split_listen(listen)[0]
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_host_port(address: str) -> bool:
    """`address` is host:port with a port a client can connect to (1..65535): a peer's or a
    cluster's address, which parse_listen (a local endpoint, port 0 allowed) is not."""
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def split_listen(listen: str) -> tuple[str, int]:
    """("127.0.0.1", 9464) from a value returned by parse_listen."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)
