"""The `nats` target's keys in a replicator link (docs/REPLICATION.md, "NATS JetStream"):

    - name: hub
      target: nats
      servers: [tls://hub-1.example:4222, tls://hub-2.example:4222, tls://hub-3.example:4222]
      stream: EDGE_GW7              # made if missing (file storage, `replicas`, allow_atomic)
      subject_prefix: edge.gw-7     # subjects <prefix>.<topic>.<partition> (default edgebus.<node>)
      replicas: 3                   # of a stream the replicator makes (default 3)
      creds_file: /etc/edgebus/hub.creds        # or nkey_seed_file, or user + password_file,
      # nkey_seed_file: /etc/edgebus/hub.nk     #   or token_file (each mode 0600)
      tls: {ca: /etc/edgebus/hub-ca.pem, cert: ..., key: ...}   # cert/key: mutual TLS
      down_stream: OFFICE           # the stream direction: down rules read (default: stream)
      topics: ["sensors.*", {pattern: commands, direction: down, remote: office.commands.gw-7}]

Servers are nats:// or tls:// URLs (host:port alone means nats://). A server off this host
needs tls (a tls block or tls:// URLs): credentials never cross the network in clear.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgebus.errors import ConfigError

NATS_KEYS = frozenset({"servers", "stream", "subject_prefix", "replicas", "creds_file",
                       "nkey_seed_file", "user", "password_file", "down_stream"})
MAX_SERVERS = 16
_STREAM = re.compile(r"[A-Za-z0-9_-]{1,255}")  # JetStream: no '.', '*', '>', spaces or paths
_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_URL = re.compile(r"(?:(nats|tls)://)?([A-Za-z0-9._-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})")
_LOOPBACK = ("127.", "localhost", "[::1]")


@dataclass(frozen=True)
class NatsOptions:
    servers: tuple[str, ...]
    stream: str
    subject_prefix: str
    replicas: int = 3
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: str | None = None
    nkey_seed_file: str | None = None
    tls_urls: bool = False  # every server URL is tls://
    down_stream: str | None = None  # the stream direction: down rules read (default: stream)


def _servers(raw: Any, where: str) -> tuple[tuple[str, ...], bool]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_SERVERS:
        raise ConfigError(f"{where}servers: expected a list of 1 to {MAX_SERVERS} NATS URLs "
                          "(nats://host:4222 or tls://host:4222)")
    out, schemes = [], set()
    for j, s in enumerate(raw):
        m = _URL.fullmatch(s) if isinstance(s, str) else None
        if m is None or not 0 < int(m.group(3)) < 65536:
            raise ConfigError(f"{where}servers[{j}]: {s!r} is not nats://host:port or tls://host:port")
        schemes.add(m.group(1) or "nats")
        out.append(s if m.group(1) else f"nats://{s}")
    return tuple(out), schemes == {"tls"}


def nats_options(raw: dict[str, Any], where: str, node: str,
                 secret: Callable[[str], tuple[Path, str]], has_tls: bool) -> NatsOptions:
    """The nats keys of one link; secret(key) is (path, text) of the 0600 file that key names."""
    servers, tls_urls = _servers(raw.get("servers"), where)
    if not (has_tls or tls_urls):
        far = [s for s in servers if not s.split("://", 1)[1].startswith(_LOOPBACK)]
        if far:
            raise ConfigError(f"{where}servers: {far[0]} is not on this host, and without tls "
                              "the link's credentials and data would cross the network in clear: "
                              "add a tls block or use tls:// URLs")
    stream = raw.get("stream")
    if not isinstance(stream, str) or not _STREAM.fullmatch(stream):
        raise ConfigError(f"{where}stream: expected a JetStream stream name (letters, digits, "
                          f"'_', '-'), got {stream!r}")
    prefix = raw.get("subject_prefix", f"edgebus.{node}")
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise ConfigError(f"{where}subject_prefix: expected NATS subject tokens separated by '.' "
                          f"(no wildcards), got {prefix!r}")
    down = raw.get("down_stream")
    if down is not None and (not isinstance(down, str) or not _STREAM.fullmatch(down)):
        raise ConfigError(f"{where}down_stream: expected a JetStream stream name (letters, "
                          f"digits, '_', '-'), got {down!r}")
    replicas = raw.get("replicas", 3)
    if isinstance(replicas, bool) or replicas not in (1, 3, 5):
        raise ConfigError(f"{where}replicas: expected 1, 3 or 5, got {replicas!r}")
    auth = [k for k in ("creds_file", "nkey_seed_file", "user", "token_file") if k in raw]
    if len(auth) > 1:
        raise ConfigError(f"{where}{auth[1]}: give one way to authenticate, not {' and '.join(auth)}")
    user = password = None
    if "user" in raw:
        user = raw["user"]
        if not isinstance(user, str) or not user:
            raise ConfigError(f"{where}user: expected a NATS user name")
        if "password_file" not in raw:
            raise ConfigError(f"{where}password_file: a user needs its password_file (mode 0600)")
        password = secret("password_file")[1]
    elif "password_file" in raw:
        raise ConfigError(f"{where}password_file: goes with user")
    creds = str(secret("creds_file")[0]) if "creds_file" in raw else None
    seed = str(secret("nkey_seed_file")[0]) if "nkey_seed_file" in raw else None
    token = secret("token_file")[1] if "token_file" in raw else None
    return NatsOptions(servers, stream, prefix, replicas, user, password, token,
                       creds, seed, tls_urls, down)


def down_subject_problem(subject: str) -> str | None:
    """Why a direction: down rule's remote cannot be read from NATS (one exact subject), or None."""
    if not _PREFIX.fullmatch(subject):
        return (f"expected one NATS subject (tokens of letters, digits, '_', '-' separated by "
                f"'.', no wildcards: one subject is one local partition), got {subject!r}")
    return None
