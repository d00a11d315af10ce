"""`edgebus serve`: recover the log, listen, serve until SIGTERM/SIGINT, shut down cleanly."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from typing import Any

from edgebus.errors import EdgebusError
from edgebus.log.manager import LogManager
from edgebus.log.topic_config import TopicConfig
from edgebus.server.broker import Broker
from edgebus.server.notify import Notifier, summary_line

log = logging.getLogger("edgebus.supervisor")


def setup_logging(level: str) -> None:
    # One line per event, no color; journald adds its own timestamps, a terminal user wants them.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if sys.stderr.isatty() or not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=fmt,
                        stream=sys.stderr, force=True)


def topic_config_of(settings: Any) -> TopicConfig:
    """The storage TopicConfig for a config file's topic settings (the same field names)."""
    return TopicConfig(**dataclasses.asdict(settings))


def run(config: Any) -> int:
    """Serve until told to stop; returns the process exit code."""
    setup_logging(config.log_level)
    t0 = time.monotonic()
    data_dir = config.data_dir
    print(f"edgebus: data directory {data_dir}", file=sys.stderr)
    print(f"edgebus: socket {config.socket}", file=sys.stderr)
    logs = LogManager(data_dir, log=logging.getLogger("edgebus.log"))
    try:
        logs.open()
    except EdgebusError as e:
        log.error("%s", e)
        return 1
    defaults = topic_config_of(config.topic_defaults)
    try:
        for decl in config.topics:
            if decl.name in logs.topics():
                continue
            logs.create_topic(decl.name, topic_config_of(decl.settings))
            log.info("created topic %s from the config", decl.name)
    except EdgebusError as e:
        log.error("config topics: %s", e)
        logs.close()
        return 1
    notifier = Notifier()
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
        notifier=notifier,
    )
    try:
        broker.listen()
    except OSError as e:
        log.error("cannot listen on %s: %s", config.socket, e)
        logs.close()
        return 1
    log.info("ready in %.3f s: %s", time.monotonic() - t0, summary_line(broker))
    notifier.ready(summary_line(broker))
    broker.serve_forever()
    return 0
