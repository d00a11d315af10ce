"""`edgebus serve`: recover the log, listen, serve until SIGTERM/SIGINT, shut down cleanly."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any

from edgebus.config import load_config, load_replica_tokens
from edgebus.errors import (
    ConfigError,
    DataDirLockedError,
    EdgebusError,
    SocketDirError,
    SocketInUseError,
)
from edgebus.heap import keep_freed_heap
from edgebus.log.manager import LogManager
from edgebus.server import testhooks
from edgebus.server.broker import Broker
from edgebus.server.disk import DiskGuard
from edgebus.server.gcpolicy import freeze_after_start
from edgebus.server.listeners.inet import server_context  # imports ssl only when called
from edgebus.server.listeners.socket_claim import SocketClaim
from edgebus.server.logsetup import setup_logging as _setup_logging
from edgebus.server.memtrim import release_free_memory
from edgebus.server.notify import Notifier, summary_line
from edgebus.server.reload import ConfigReload, apply_declared_topics, topic_config_of
from edgebus.server.slim import forget_start_garbage

log = logging.getLogger("edgebus.supervisor")

# Refusals at start that only a change of configuration (or stopping another supervisor) can
# clear: an unsafe socket directory, a socket, data directory or port another process holds, a
# listen address not of this host. They exit EX_CONFIG (78) like a wrong config file, which the
# units' RestartPreventExitStatus=78 makes final, instead of a restart loop that cannot succeed.
_CONFIG_REFUSALS = (ConfigError, SocketDirError, SocketInUseError, DataDirLockedError)


def _exit_status(e: EdgebusError) -> int:
    return os.EX_CONFIG if isinstance(e, _CONFIG_REFUSALS) else 1


def setup_logging(level: str) -> None:
    # One line per event, no colour; under journald with priority prefixes (server/logsetup.py).
    _setup_logging(level)


def run(config: Any, file_config: Any = None) -> int:
    """Serve until told to stop; returns the process exit code. SIGHUP re-reads the config
    file (edgebus/server/reload.py). `file_config`: the file as read, before the command line's
    overrides made `config` (None: the same)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until ConfigReload handles it (after recovery)
    setup_logging(config.log_level)
    keep_freed_heap()  # batch-sized buffers reuse heap pages (edgebus/heap.py)
    testhooks.install()  # test-only, needs EDGEBUS_TEST_HOOKS=1 (server/testhooks.py)
    notifier = Notifier()  # sd_notify; does nothing without NOTIFY_SOCKET
    t0 = time.monotonic()
    data_dir = config.data_dir
    print(f"edgebus: data directory {data_dir}", file=sys.stderr)
    print(f"edgebus: socket {config.socket}", file=sys.stderr)
    # The replica listener's secrets: a config error, found before anything is touched.
    try:
        tokens = load_replica_tokens(config.replica.tokens_file)
        r = config.replica
        tls = (server_context(str(r.tls_cert), str(r.tls_key), str(r.tls_ca) if r.tls_ca else None,
                              "replica.tls")
               if r.tls_cert is not None and r.tls_key is not None else None)
        kafka_tls = _kafka_tls(config.kafka)
    except ConfigError as e:
        log.error("%s", e)
        return os.EX_CONFIG
    # The socket path first: a second supervisor on a live socket, or an unsafe socket
    # directory, is refused at once, not after minutes of recovery (server/listeners/socket_claim.py).
    claim = SocketClaim(config.socket, config.socket_mode)
    try:
        claim.acquire()
    except EdgebusError as e:
        log.error("%s", e)
        return _exit_status(e)
    except OSError as e:
        log.error("cannot use the socket path %s: %s", config.socket, e)
        return 1
    logs = LogManager(data_dir, log=logging.getLogger("edgebus.log"))
    logs.max_topics, logs.max_partitions = config.limits.max_topics, config.limits.max_partitions
    notifier.status(f"recovering the log in {data_dir}")
    try:
        logs.open()
    except EdgebusError as e:
        log.error("%s", e)
        claim.release()
        return _exit_status(e)
    defaults = topic_config_of(config.topic_defaults)
    # Declared topics are created, or set to the file's settings (edgebus/server/reload.py).
    if apply_declared_topics(logs, config.topics):
        logs.close()
        claim.release()
        return 1
    disk = DiskGuard.from_settings(logs, config.disk)
    disk.check()  # a disk already low is reported before READY
    try:
        broker = Broker(
            logs, config.socket,
            socket_mode=config.socket_mode,
            topic_defaults=defaults,
            max_connections=config.limits.max_connections,
            max_output_buffer=config.limits.max_output_buffer_bytes,
            max_fetch_wait_ms=config.limits.max_fetch_wait_ms,
            flush_interval_ms=config.log.flush_interval_ms,
            checkpoint_interval_ms=config.log.checkpoint_interval_ms,
            retention_check_interval_ms=config.log.retention_check_interval_ms,
            cleaner_interval_ms=config.log.cleaner_interval_ms,
            cleaner_io_bytes_per_s=config.log.cleaner_io_bytes_per_s,
            notifier=notifier,
            disk=disk,
            max_input_buffer=config.limits.max_input_buffer_bytes,
            node=config.replica.node,
            replica_listen=config.replica.listen,
            replica_tokens=tokens,
            replica_tls=tls,
            replica_link_idle_ms=config.replica.link_idle_timeout_ms,
            socket_claim=claim,
            max_connections_per_uid=config.limits.max_connections_per_uid,
            max_output_total=config.limits.max_output_total_bytes,
            acl=config.acl.policy() if config.acl.enabled else None,
            kafka=config.kafka,
            kafka_tls=kafka_tls,
        )
    except ConfigError as e:  # e.g. the Kafka listener's SASL credentials file
        log.error("%s", e)
        logs.close()
        claim.release()
        return os.EX_CONFIG
    http_auth = http_listener = None
    if config.http.enabled:  # the console and HTTP API
        http_auth, http_listener = _start_http(broker, config)
    if config.http.enabled and http_auth is None:
        logs.close()
        claim.release()
        return os.EX_CONFIG
    try:
        broker.listen()
    except ConfigError as e:  # a listener's port in use: the message names the setting
        log.error("%s", e)
        broker.listener.shutdown()
        logs.close()
        claim.release()
        return os.EX_CONFIG
    except (OSError, EdgebusError) as e:
        log.error("cannot listen on %s: %s", config.socket, e)
        logs.close()
        claim.release()
        return 1
    load = (lambda: load_config(config.source)) if config.source is not None else None
    reloader = ConfigReload(logs, broker.admin, config, load, notifier, file_config)
    reloader.acl = broker.acl  # the access rules are reloaded too
    reloader.kafka = broker.kafka  # and kafka.auto_create_topics
    reloader.http_auth = http_auth  # and http.users_file
    reloader.http_listener = http_listener  # whose streams a reload may end (http/revoke.py)
    reloader.broker = broker  # and replica.tokens_file
    if broker.acl is not None:
        broker.acl.settings = config.acl  # Kafka's CreateAcls/DeleteAcls edit its acl.file
    broker.add_service(reloader)
    reloader.install()
    reloader.metrics = _start_metrics(broker, config)  # and metrics.listen
    # What the start freed (recovery's buffers, the imports' temporaries, the start-only modules
    # of server/slim.py) back to the kernel: ~0.5 MB of an idle supervisor's RSS (issue 16).
    forget_start_garbage()
    release_free_memory()
    freeze_after_start()  # what the start left lives as long as the process (server/gcpolicy.py)
    log.info("ready in %.3f s: %s", time.monotonic() - t0, summary_line(broker))
    notifier.ready(summary_line(broker))  # after recovery and listen: clients can connect now
    broker.serve_forever()  # the metrics endpoint, a service, closes with the loop
    return 0


def _start_http(broker: Broker, config: Any) -> tuple[Any, Any]:
    """The HTTP API and console (docs/HTTP.md), a listener on the loop; returns its
    Authenticator (a reload replaces its users) and the listener, (None, None) if it failed. Unlike metrics, a failure
    stops the start: an operator who enabled it expects it, and the error says why."""
    from edgebus.server.http.auth import Authenticator, load_users
    from edgebus.server.listeners.http import HttpListener

    h = config.http
    try:
        users = load_users(h.users_file)
        tls = (server_context(str(h.tls_cert), str(h.tls_key), None, "http.tls_cert")
               if h.tls_cert is not None and h.tls_key is not None else None)
        auth = Authenticator(users)

        def app() -> Any:  # at the first connection (listeners/http.py): ~0.8 MB of modules
            from edgebus.server.http.api import App

            return App(auth, max_streams=h.max_streams)

        listener = HttpListener(broker.loop, app, h.listen, tls, max_connections=h.max_connections,
                                max_body=h.max_body_bytes)
        listener.listen()
    except (ConfigError, OSError) as e:
        log.error("cannot serve HTTP on %s: %s", h.listen, e)
        return None, None
    broker.add_service(listener)
    return auth, listener


def _kafka_tls(k: Any) -> Any:
    """The Kafka listener's TLS context (None: plain TCP); ConfigError for unreadable files."""
    if not k.enabled or k.tls_cert is None or k.tls_key is None:
        return None
    return server_context(str(k.tls_cert), str(k.tls_key), str(k.tls_ca) if k.tls_ca else None,
                          "kafka.tls_cert/tls_key/tls_ca")


def _start_metrics(broker: Broker, config: Any) -> Any:
    """The optional Prometheus endpoint, a service on the loop (returned; None: none); a failure
    to start it is logged, and the log is served all the same (a missing scrape is what alerts
    on it). The endpoint that failed stays on the loop, down, with its error in the status
    document, and the next reload tries its address again (reload_live.py)."""
    listen = config.metrics.listen
    if not listen:
        return None
    from edgebus.server.metrics import MetricsServer

    server = MetricsServer(broker.loop, broker, listen)  # no prometheus-client: promtext.py
    try:
        server.start()
    except OSError as e:
        log.error("cannot serve metrics on %s: %s; `edgebus reload` tries again", listen, e)
    broker.add_service(server)
    return server
