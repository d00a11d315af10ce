"""The topics a config file declares, applied at start and again on SIGHUP (a reload).

The config file owns the topics it declares under `topics:`: at start and at every reload each is
created when missing, and its settings (topic_defaults overlaid with its own keys) replace those
it has, so a restart and a reload end in the same state. A declared topic's settings changed by a
client (Admin.alter_topic_config) are therefore set back to the file's at the next reload or
restart; change the file instead. The partition count cannot change: a different count in the file
is reported and left as it is. The access rules, `kafka.auto_create_topics` and `log_level`
(unless the command line set it) are applied too,
and so are the secrets files of the listeners that run: `http.users_file` (from the next HTTP
request) and `replica.tokens_file` (from the next link; a link whose node's token changed or was
removed is closed), `limits:`, the intervals of `log:`, `disk:` and `metrics.listen` (how each
takes effect: edgebus/server/reload_live.py). Everything else in the file (data directory,
socket, the rest of `kafka:`, `http:` and `replica:`, acl.enabled) takes effect only at the next
restart: a reload names each such changed setting, with its running and its new value, in the log
and in the status document (`edgebus status`, `edgebus reload`; edgebus/server/reload_diff.py).

`ConfigReload` is the service on the loop: the SIGHUP handler only sets a flag (it may run between
any two bytecodes of the loop thread); the loop then ticks the service, which reads and checks the
file and applies it on the loop thread, like any admin request. A file that does not load (a typo,
or a secrets file that is unreadable or readable by others) is reported and nothing changes.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from edgebus.config import load_replica_tokens
from edgebus.errors import ConfigError, EdgebusError
from edgebus.log.manager import LogManager
from edgebus.log.topic_config import TopicConfig
from edgebus.opsconfig import is_loopback_listen
from edgebus.server.handlers.admin import AdminHandlers, describe_changes
from edgebus.server.notify import Notifier
from edgebus.server.reload_diff import pending_restart
from edgebus.server.reload_live import (
    apply_intervals,
    apply_limits,
    apply_metrics_listen,
    bind_metrics_listen,
    retry_metrics,
)
from edgebus.server.service import Service

log = logging.getLogger("edgebus.reload")

def topic_config_of(settings: Any) -> TopicConfig:
    """The storage TopicConfig for a config file's topic settings (the same field names)."""
    return TopicConfig(**dataclasses.asdict(settings))


def apply_declared_topics(logs: LogManager, specs: Any,
                          created: Callable[[str], None] | None = None) -> list[EdgebusError]:
    """Create each declared topic that is missing and set the settings of each that exists.
    Returns the errors (one per topic that could not be created or changed); the other topics
    are applied all the same. `created(name)` is called for each topic created."""
    errors: list[EdgebusError] = []
    for spec in specs:
        want = topic_config_of(spec.settings)
        have = logs.topics().get(spec.name)
        try:
            if have is None:
                logs.create_topic(spec.name, want)
                log.info("created topic %s from the config", spec.name)
                if created is not None:
                    created(spec.name)
                continue
            # What the file cannot say: the topic's identity and whether it is a mirror.
            want = dataclasses.replace(want, incarnation=have.incarnation,
                                       mirror_of=have.mirror_of)
            if want.partitions != have.partitions:
                log.warning("topic %s: the config says %d partition(s), it has %d; the partition "
                            "count cannot be changed, so it is kept", spec.name, want.partitions,
                            have.partitions)
                want = dataclasses.replace(want, partitions=have.partitions)
            if want != have:
                changes = describe_changes(have, want)
                logs.alter_topic_config(spec.name, want)
                log.info("topic %s: %s (from the config)", spec.name, changes)
        except EdgebusError as e:
            log.error("config topics: %s: %s", spec.name, e)
            errors.append(e)
    return errors


class ConfigReload(Service):
    """SIGHUP: read the config file again, apply what can change while running, and name each
    changed setting that waits for a restart (edgebus/server/reload_diff.py)."""

    name = "reload"

    timer_static = True  # set by the SIGHUP handler: the loop asks again after every signal

    def __init__(self, logs: LogManager, admin: AdminHandlers, config: Any,
                 load: Callable[[], Any] | None, notifier: Notifier | None = None,
                 started: Any = None) -> None:
        self.logs = logs
        self.admin = admin
        self.config = config  # the running configuration
        self.load = load  # reads the file again (None: running on built-in defaults)
        self.notifier = notifier
        # The file as read at the start (before command-line overrides): what a reload's file is
        # compared with. A key the command line set is never reported: the file's value would
        # not apply after a restart either.
        self.started = started if started is not None else config
        self.overridden = frozenset(k for k in ("data_dir", "socket", "log_level")
                                    if getattr(config, k) != getattr(self.started, k))
        self.requested = False
        self.reloads = 0  # reloads applied (a file that did not load is not counted)
        self.attempts = 0  # SIGHUPs handled, applied or not (`edgebus reload` waits for this)
        self.last_at: float | None = None  # wall clock of the last attempt
        self.last_error: str | None = None  # why the last attempt changed nothing (None: applied)
        self.pending: dict[str, tuple[str, str]] = {}  # key -> (running, file): restart-only
        # edgebus/server/acl Authorizer: its rules are replaced at each reload (None: acl off).
        self.acl: Any = None
        # The Broker's KafkaFront (None: no Kafka listener): kafka.auto_create_topics is reloaded.
        self.kafka: Any = None
        # The HTTP listener's Authenticator (None: no HTTP listener): http.users_file is reloaded.
        self.http_auth: Any = None
        # The Broker (None in tests of the service alone): replica.tokens_file is reloaded while
        # its replica listener runs.
        self.broker: Any = None
        # The metrics endpoint (edgebus/server/metrics.py; None: none served): metrics.listen
        # is reloaded, and limits:, log: and disk: on the Broker's parts (reload_live.py).
        self.metrics: Any = None
        # The HTTP listener (None: none): a reload ends the event streams it takes away.
        self.http_listener: Any = None

    def install(self) -> None:
        """Handle SIGHUP from now on (main thread). The supervisor ignores SIGHUP until then
        (systemd sends no reload before READY=1), and keeps this handler until it exits."""
        signal.signal(signal.SIGHUP, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # The loop's wake-up fd (Loop.install_signals) ends its select; tick runs next turn.
        self.requested = True

    def next_deadline(self) -> float | None:
        return 0.0 if self.requested else None

    def tick(self, now: float) -> None:
        self.requested = False
        self.reload()

    def status(self) -> dict[str, Any]:
        """For `edgebus status` and `edgebus reload`."""
        return {"config": str(self.config.source) if self.config.source else None,
                "reloads": self.reloads, "attempts": self.attempts, "last_at": self.last_at,
                "last_error": self.last_error,
                "pending_restart": {k: {"running": a, "file": b} for k, (a, b) in self.pending.items()}}

    def _listeners(self) -> frozenset[str]:
        running = set()
        if self.http_auth is not None:
            running.add("http")
        if self.broker is not None and self.broker.replica_listener is not None:
            running.add("replica")
        return frozenset(running)

    def _failed(self, why: str) -> bool:
        self.last_error = why
        log.error("reload: %s; the running configuration is kept", why)
        self._ready()
        return False

    def reload(self) -> bool:
        """Apply the file now; False if it did not load (the running settings stay)."""
        source = self.config.source
        self.attempts += 1
        self.last_at = time.time()
        if self.load is None:
            self.last_error = "no config file (the supervisor runs on built-in defaults)"
            log.warning("received SIGHUP, but the supervisor runs on built-in defaults: no config "
                        "file to reload (start it with --config FILE)")
            return False
        log.info("received SIGHUP: reloading %s", source)
        if self.notifier is not None:
            self.notifier.reloading()
        listeners = self._listeners()
        # Everything is read and checked before anything is applied: a bad file (the config or
        # a secrets file it names) changes nothing.
        try:
            new = self.load()
            users = None
            if "http" in listeners:
                from edgebus.server.http.auth import load_users  # only with an HTTP listener

                users = load_users(new.http.users_file)
                listen = self.config.http.listen  # the running listener's (restart-only)
                if not users and listen is not None and not is_loopback_listen(listen):
                    # The file may now say loopback (which needs no users): that address only
                    # applies at a restart, and until then the listener is open to the network.
                    raise ConfigError(f"http.users_file: the HTTP listener runs on {listen}, not "
                                      "a loopback address, so it keeps asking for authentication "
                                      "until a restart; name a users file")
            tokens = (load_replica_tokens(new.replica.tokens_file) if "replica" in listeners
                      else None)
            # Last: nothing below fails, so a socket bound here is always used (reload_live.py).
            metrics_sock = (bind_metrics_listen(self.config.metrics.listen, new.metrics.listen,
                                                self.metrics is None or self.metrics.serving)
                            if self.broker is not None else None)
        except EdgebusError as e:
            return self._failed(str(e))
        self.pending = pending_restart(self.started, new, listeners, self.overridden)
        if self.pending:
            log.warning("reload: %s changed in %s; only a restart applies %s",
                        ", ".join(f"{k} ({a} -> {b})" for k, (a, b) in self.pending.items()),
                        source, "it" if len(self.pending) == 1 else "them")
        auto = new.kafka.auto_create_topics
        if self.acl is not None:
            # The next request of every connection is decided by the new rules (its cache is
            # of the old generation); connections stay open.
            self.acl.apply(new.acl)
            log.info("reload: access control: %d rule(s), default %s", len(new.acl.policy().rules),
                     new.acl.default)
        self.admin.topic_defaults = topic_config_of(new.topic_defaults)
        if auto != self.config.kafka.auto_create_topics:
            self._set_auto_create(auto)
        level = self.config.log_level
        if "log_level" not in self.overridden and new.log_level != level:
            level = new.log_level
            logging.getLogger().setLevel(getattr(logging, level.upper(), logging.INFO))
            log.warning("reload: log_level is %s", level)  # seen whatever the new level
        revoked: frozenset[str] = frozenset()
        if users is not None:
            from edgebus.server.http.revoke import revoked_users  # only with an HTTP listener

            revoked = revoked_users(self.http_auth.users, users)
            self._set_http_users(users, new.http.users_file)
        if tokens is not None:
            self.broker.set_replica_tokens(tokens)
            log.info("reload: replica.tokens_file: %d peer node(s)", len(tokens))
        if self.broker is not None:
            apply_limits(self.broker, self.config.limits, new.limits)
            apply_intervals(self.broker, self.config.log, new.log, self.config.disk, new.disk)
            if new.metrics.listen != self.config.metrics.listen:
                self.metrics = apply_metrics_listen(self.broker, self.metrics, new.metrics.listen,
                                                    metrics_sock)
            else:  # the same address: an endpoint that could not start tries it again
                retry_metrics(self.metrics)
        if self.http_listener is not None:
            self._end_streams(revoked)
        errors = apply_declared_topics(self.logs, new.topics, self.admin.groups.topic_created)
        # What a later reload applies over: the file's live settings, restart-only ones as running.
        self.config = dataclasses.replace(
            self.config, topic_defaults=new.topic_defaults, topics=new.topics, log_level=level,
            kafka=dataclasses.replace(self.config.kafka, auto_create_topics=auto),
            acl=dataclasses.replace(new.acl, enabled=self.config.acl.enabled),
            http=dataclasses.replace(self.config.http, users_file=new.http.users_file)
            if users is not None else self.config.http,
            replica=dataclasses.replace(self.config.replica, tokens_file=new.replica.tokens_file)
            if tokens is not None else self.config.replica)
        if self.broker is not None:  # applied above
            self.config = dataclasses.replace(self.config, limits=new.limits, log=new.log,
                                              disk=new.disk, metrics=new.metrics)
        self.reloads += 1
        self.last_error = None
        log.info("reloaded %s: %d declared topic(s)%s%s", source, len(new.topics),
                 f", {len(errors)} could not be applied" if errors else "",
                 f"; waiting for a restart: {', '.join(self.pending)}" if self.pending else "")
        self._ready()
        return True

    def _set_http_users(self, users: dict[str, str], path: Any) -> None:
        """The HTTP API's users from its next request on (each request is authenticated)."""
        self.http_auth.users = users
        log.info("reload: http.users_file %s: %d user(s)%s", path, len(users),
                 "" if users else " (no authentication asked: loopback only)")

    def _end_streams(self, revoked: frozenset[str]) -> None:
        """End the event streams of removed users, or that may no longer read their topic."""
        from edgebus.server.http.revoke import end_revoked_streams  # only with an HTTP listener

        n = end_revoked_streams(self.http_listener, revoked, self.acl)
        if n:
            log.warning("reload: ended %d HTTP event stream(s) of removed users or no longer "
                        "allowed to read their topic", n)

    def _set_auto_create(self, on: bool) -> None:
        """Kafka topic auto-creation on or off from the next Metadata request (autocreate.py reads
        the settings at each); the listener's context, if a client made it, shares them."""
        front = self.kafka
        if front is not None:
            front.settings = dataclasses.replace(front.settings, auto_create_topics=on)
            if front.ctx is not None:
                front.ctx.settings = front.settings
        log.info("reload: kafka.auto_create_topics is %s", "on" if on else "off")

    def _ready(self) -> None:
        if self.notifier is not None:
            self.notifier.reloaded()
