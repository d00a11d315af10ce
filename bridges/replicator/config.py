"""The replicator's YAML config: this node, the local supervisor, and the links.

    node: gateway-7                 # this node's name: mirrors on peers are "gateway-7/<topic>"
    metrics:
      listen: 127.0.0.1:9466        # optional: Prometheus /metrics and a JSON /status
    source:
      socket: /run/edgebus/edgebus.sock   # optional (default: as every client finds it)
    links:
      - name: backup                # for logs and status
        target: peer                # another edgebus node's replica listener
        address: 127.0.0.1:9093
        token_file: /etc/edgebus/backup.token   # this node's token there (mode 0600)
        tls:                        # when the peer's listener has TLS (any address but loopback)
          ca: /etc/edgebus/peer-ca.pem          # verifies the peer (default: the system's CAs)
          cert: /etc/edgebus/gw-7.pem           # mutual TLS: this node's certificate and key;
          key: /etc/edgebus/gw-7.key            #   then token_file may be left out
          server_name: gw-8.example             # the name in the peer's certificate
        topics:                     # names or fnmatch patterns; the first that matches counts
          - {pattern: "alarms.*", priority: 10}   # strict priority: higher drains first
          - {pattern: "sensors.*", weight: 3}     # within a class, shares by weight (default 1)
          - {pattern: "debug.*", max_age: 1h}     # older records are not shipped: a gap record
          - teapot                  # priority 0
          - {pattern: commands, direction: down}  # the peer's topic, mirrored here
        local_replica:              # for direction: down: this node's own replica listener,
          address: 127.0.0.1:9093   #   where the link appends as the peer node
          token_file: /etc/edgebus/from-gw-8.token
        durable: true               # wait for the peer's fsync before a batch counts (default)
        max_bytes_per_s: 2MiB       # bandwidth cap of the link (default: none)
        batch_bytes: 1MiB           # the most one append carries per partition (default 4MiB)
        linger_ms: 0                # after new data wakes an idle link, wait this long first
        compression: zstd           # on the wire only; the peer stores the exact bytes (none)

A link with `target: nats` names `servers`, `stream` and its credentials instead of address and
token_file (bridges/replicator/nats_config.py).

Every error is a ConfigError naming the key, as for the supervisor's config.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridges.replicator.config_rules import TopicRule, rules_of
from bridges.replicator.config_rules import str_key as _str
from bridges.replicator.kafka_config import KafkaConfig, kafka_config
from bridges.replicator.nats_config import (
    NATS_KEYS,
    NatsOptions,
    down_subject_problem,
    nats_options,
)
from bridges.replicator.nats_wildcards import is_wildcard, made_by, wildcard_problem
from edgebus.config import parse_duration, parse_size, read_yaml_file
from edgebus.config_parse import unknown_key
from edgebus.errors import ConfigError
from edgebus.opsconfig import NODE_NAME_RE, is_host_port, is_loopback_listen, parse_listen
from edgebus.secretfiles import config_path, read_secret

TARGET_KINDS = ("peer", "kafka", "nats")
# A cap below this would ship less than one default-size batch a second: surely a typo.
MIN_BYTES_PER_S = 64 * 1024
MAX_LINKS = 64  # a gateway has a handful; more is a mistake in the file
# One append is at least a batch header's worth and at most what one read returns.
MIN_BATCH_BYTES, MAX_BATCH_BYTES = 4096, 4 * 1024 * 1024
MAX_LINGER_MS = 60_000  # longer would look like a stalled link
COMPRESSIONS = ("none", "zstd")


@dataclass(frozen=True)
class TlsConfig:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class LocalReplica:
    """A peer link's way into this node's own supervisor for topics brought down from the peer
    (bridges/replicator/peer_pull.py): its replica listener, where the link appends as the peer
    node (its token there in replica.tokens_file), so that only mirrors of that peer are written."""

    address: str
    token: str
    tls: TlsConfig | None = None


@dataclass(frozen=True)
class LinkConfig:
    name: str
    target: str
    address: str
    token: str
    topics: tuple[TopicRule, ...]
    durable: bool = True
    tls: TlsConfig | None = None
    max_bytes_per_s: int | None = None  # None: no cap
    # An idle link asks the target for a sign of life this often, and every request to the
    # target waits at most twice this: a half-open link is noticed within two intervals.
    heartbeat_s: float = 5.0
    kafka: KafkaConfig | None = None  # target: kafka
    nats: NatsOptions | None = None  # target "nats": servers, stream, credentials
    local: LocalReplica | None = None  # target "peer" with direction: down rules
    batch_bytes: int = MAX_BATCH_BYTES  # the most one append carries per partition
    linger_ms: int = 0  # after new data wakes an idle link, wait this long before reading it
    compression: str = "none"  # "zstd": appends compressed on the wire

    def rule_for(self, topic: str) -> TopicRule | None:
        if topic.startswith("__"):
            return None  # internal topics (committed offsets) are not the user's data
        # A topic brought down is never shipped back up (one a wildcard rule names included).
        if any(r.pattern == topic or (self.target == "nats" and not r.subjects
                                      and made_by(r.remote or r.pattern, r.pattern, topic))
               for r in self.pulls):
            return None
        return next((r for r in self.topics
                     if r.direction == "up" and fnmatch.fnmatchcase(topic, r.pattern)), None)

    @property
    def pulls(self) -> tuple[TopicRule, ...]:
        """The rules of topics brought down from the target (bridges/replicator/pull.py)."""
        return tuple(r for r in self.topics if r.direction == "down")


@dataclass(frozen=True)
class ReplicatorConfig:
    node: str
    socket: Path | None
    links: tuple[LinkConfig, ...]
    source: Path | None = None
    metrics_listen: str | None = None  # host:port (loopback) of /metrics and /status


def _read_token(path: Path, where: str, key: str = "token_file") -> str:
    return read_secret(path, where + key)


def _link(raw: Any, i: int, base: Path | None, node: str = "") -> LinkConfig:
    where = f"links[{i}]."
    if not isinstance(raw, dict):
        raise ConfigError(f"links[{i}]: expected a mapping")
    known = {"name", "target", "address", "token_file", "topics", "durable", "tls",
             "max_bytes_per_s", "heartbeat_s", "kafka", "local_replica", "batch_bytes",
             "linger_ms", "compression"}
    if raw.get("target") == "nats":
        known = known - {"address"} | NATS_KEYS
    for k in raw:
        if k not in known:
            raise _unknown(k, f"links[{i}]", sorted(known))
    target = _str(raw, "target", where)
    if target not in TARGET_KINDS:
        raise ConfigError(f"{where}target: {target!r} is not one of {', '.join(TARGET_KINDS)}")
    if target == "nats":
        return _nats_link(raw, i, base, node)
    address = _str(raw, "address", where)
    if target == "kafka":
        return _kafka_link(raw, i, address, base)
    if "kafka" in raw:
        raise ConfigError(f"{where}kafka: only for target: kafka")
    if not is_host_port(address):
        raise ConfigError(f"{where}address: expected host:port, got {address!r}")
    tls = _tls(raw.get("tls"), where + "tls.", base) if "tls" in raw else None
    if tls is None and not is_loopback_listen(address):
        raise ConfigError(f"{where}address: {address} is not a loopback address, and without tls "
                          "the link's token would cross the network in clear: add tls (the peer "
                          "sets replica.tls_cert), or use a tunnel to a loopback address")
    token = ""
    if "token_file" in raw or tls is None or tls.cert is None:
        token = _read_token(config_path(_str(raw, "token_file", where), base), where)
    rules = rules_of(raw, where)
    local = None
    if any(r.direction == "down" for r in rules) or "local_replica" in raw:
        local = _local_replica(raw.get("local_replica"), where + "local_replica", base)
    cap, durable, hb = _common(raw, where)
    return LinkConfig(_str(raw, "name", where, f"link{i}"), target, address, token, rules,
                      durable, tls, cap, hb, local=local, **_policies(raw, where))


def _local_replica(raw: Any, where: str, base: Path | None) -> LocalReplica:
    """local_replica: {address, token_file, tls}: this node's own replica listener."""
    if not isinstance(raw, dict) or "address" not in raw \
            or set(raw) - {"address", "token_file", "tls"}:
        raise ConfigError(
            f"{where}: a peer link with direction: down rules needs local_replica: {{address: "
            "HOST:PORT, token_file: FILE}, this node's own replica listener (replica.listen "
            "here), where it appends the peer's batches as the peer node (docs/REPLICATION.md)")
    address = _str(raw, "address", where + ".")
    if not is_host_port(address):
        raise ConfigError(f"{where}.address: expected host:port, got {address!r}")
    tls = _tls(raw.get("tls"), where + ".tls.", base) if "tls" in raw else None
    if tls is None and not is_loopback_listen(address):
        raise ConfigError(f"{where}.address: {address} is not a loopback address: add tls")
    token = ""
    if "token_file" in raw or tls is None or tls.cert is None:
        token = _read_token(config_path(_str(raw, "token_file", where + "."), base), where + ".")
    return LocalReplica(address, token, tls)


def _kafka_link(raw: dict[str, Any], i: int, address: str, base: Path | None) -> LinkConfig:
    where = f"links[{i}]."
    for k in ("token_file", "tls"):
        if k in raw:
            raise ConfigError(f"{where}{k}: a Kafka link sets its security under kafka: "
                              "(security.protocol, sasl.*, ssl.*)")
    kcfg = kafka_config(raw.get("kafka"), address, where, base)
    cap, durable, hb = _common(raw, where)
    if not durable:
        raise ConfigError(f"{where}durable: a Kafka link always waits for acks=all (the no-gap "
                          "promise rests on it); leave durable out")
    return LinkConfig(_str(raw, "name", where, f"link{i}"), "kafka", kcfg.bootstrap, "",
                      rules_of(raw, where), durable, None, cap, hb, kcfg, **_policies(raw, where))


def _nats_link(raw: dict[str, Any], i: int, base: Path | None, node: str) -> LinkConfig:
    where = f"links[{i}]."
    tls = _tls(raw.get("tls"), where + "tls.", base) if "tls" in raw else None

    def secret(key: str) -> tuple[Path, str]:
        path = config_path(_str(raw, key, where), base)
        return path, _read_token(path, where, key)

    nats = nats_options(raw, where, node, secret, tls is not None)
    rules = rules_of(raw, where, subject_lists=True)
    for j, r in enumerate(rules):
        if r.direction == "down" and not r.subjects and is_wildcard(r.remote or r.pattern):
            problem = wildcard_problem(r.remote or r.pattern, r.pattern)
            if problem is not None:
                raise ConfigError(f"{where}topics[{j}].remote: {problem}")
            continue
        if r.max_subjects is not None:
            raise ConfigError(f"{where}topics[{j}].max_subjects: only for a remote with NATS "
                              "wildcards ('*', '>')")
        for subject in (r.subjects or (r.remote or r.pattern,)) if r.direction == "down" else ():
            problem = down_subject_problem(subject)
            if problem is not None:
                raise ConfigError(f"{where}topics[{j}].remote: {problem}")
    cap, durable, hb = _common(raw, where)
    return LinkConfig(_str(raw, "name", where, f"link{i}"), "nats", nats.servers[0], "", rules,
                      durable, tls, cap, hb, nats=nats, **_policies(raw, where))


def _common(raw: dict[str, Any], where: str) -> tuple[int | None, bool, float]:
    cap = raw.get("max_bytes_per_s")
    if cap is not None:
        try:
            cap = parse_size(cap)
        except ValueError as e:
            raise ConfigError(f"{where}max_bytes_per_s: {e}") from None
        if cap < MIN_BYTES_PER_S:
            raise ConfigError(f"{where}max_bytes_per_s: at least {MIN_BYTES_PER_S} bytes/s")
    durable = raw.get("durable", True)
    if not isinstance(durable, bool):
        raise ConfigError(f"{where}durable: expected true or false, got {durable!r}")
    hb = raw.get("heartbeat_s", 5.0)
    if isinstance(hb, bool) or not isinstance(hb, int | float) or not 0.1 <= hb <= 300:
        raise ConfigError(f"{where}heartbeat_s: expected seconds in [0.1, 300], got {hb!r}")
    return cap, durable, float(hb)


def _policies(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """batch_bytes, linger_ms and compression (LinkConfig's keyword arguments)."""
    batch_bytes = _size(raw, "batch_bytes", where, MAX_BATCH_BYTES, MIN_BATCH_BYTES,
                        MAX_BATCH_BYTES)
    linger = raw.get("linger_ms", 0)
    try:
        linger = parse_duration(linger)
    except ValueError as e:
        raise ConfigError(f"{where}linger_ms: {e}") from None
    if not 0 <= linger <= MAX_LINGER_MS:
        raise ConfigError(f"{where}linger_ms: expected 0..{MAX_LINGER_MS} ms, got {linger}")
    comp = raw.get("compression", "none")
    if comp not in COMPRESSIONS:
        raise ConfigError(f"{where}compression: expected one of {', '.join(COMPRESSIONS)}, "
                          f"got {comp!r}")
    if comp != "none" and raw.get("target") != "peer":
        raise ConfigError(f"{where}compression: for target: peer (a Kafka link compresses with "
                          "its kafka: settings)")
    return {"batch_bytes": batch_bytes, "linger_ms": linger, "compression": comp}


def _size(raw: dict[str, Any], key: str, where: str, default: int, lo: int, hi: int) -> int:
    try:
        v = parse_size(raw.get(key, default))
    except ValueError as e:
        raise ConfigError(f"{where}{key}: {e}") from None
    if not lo <= v <= hi:
        raise ConfigError(f"{where}{key}: expected {lo}..{hi} bytes, got {v}")
    return v


def _tls(raw: Any, where: str, base: Path | None) -> TlsConfig:
    if raw is None:
        return TlsConfig()
    if not isinstance(raw, dict) or set(raw) - {"ca", "cert", "key", "server_name"}:
        raise ConfigError(f"{where[:-1]}: expected a mapping of ca, cert, key, server_name")
    paths = {k: config_path(_str(raw, k, where), base) for k in ("ca", "cert", "key") if k in raw}
    for k, p in paths.items():
        if not p.is_file():
            raise ConfigError(f"{where}{k}: {p} is not a readable file")
    if ("cert" in paths) != ("key" in paths):
        raise ConfigError(f"{where}cert: cert and key go together")
    name = _str(raw, "server_name", where) if "server_name" in raw else None
    return TlsConfig(paths.get("ca"), paths.get("cert"), paths.get("key"), name)


def _unknown(key: str, where: str, known: list[str]) -> ConfigError:
    """Worded as the supervisor's config errors: the close key when there is one."""
    e = unknown_key(str(key), where, known)
    return ConfigError(f"{e.key}: {e.message}")


def config_from_mapping(doc: Any, source: Path | None = None) -> ReplicatorConfig:
    if not isinstance(doc, dict):
        raise ConfigError("the replicator config must be a mapping with node and links")
    for k in doc:
        if k not in ("node", "source", "links", "metrics"):
            raise _unknown(k, "", ["links", "metrics", "node", "source"])
    node = _str(doc, "node", "")
    if not NODE_NAME_RE.fullmatch(node):
        raise ConfigError(f"node: {node!r} is not a node name (1-64 letters, digits, '.', '_', '-')")
    src = doc.get("source") or {}
    if not isinstance(src, dict) or set(src) - {"socket"}:
        raise ConfigError("source: expected a mapping with at most 'socket'")
    sock = Path(_str(src, "socket", "source.")).expanduser() if "socket" in src else None
    links = doc.get("links")
    if not isinstance(links, list) or not links:
        raise ConfigError("links: expected a non-empty list")
    if len(links) > MAX_LINKS:
        raise ConfigError(f"links: {len(links)} links, at most {MAX_LINKS}")
    base = source.parent if source is not None else None
    built = tuple(_link(raw, i, base, node) for i, raw in enumerate(links))
    names = [ln.name for ln in built]
    if len(set(names)) != len(names):
        raise ConfigError("links: two links have the same name")
    metrics = doc.get("metrics") or {}
    if not isinstance(metrics, dict) or set(metrics) - {"listen"}:
        raise ConfigError("metrics: expected a mapping with 'listen: 127.0.0.1:PORT'")
    try:
        listen = parse_listen(metrics.get("listen"))
    except ValueError as e:
        raise ConfigError(f"metrics.listen: {e}") from None
    return ReplicatorConfig(node, sock, built, source, listen)


def load_config(path: str | os.PathLike[str]) -> ReplicatorConfig:
    p = Path(path).expanduser()
    try:
        return config_from_mapping(read_yaml_file(p), p)
    except ConfigError as e:
        if str(p) in str(e):
            raise
        raise ConfigError(f"{p}: {e}") from None
