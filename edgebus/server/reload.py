"""The topics a config file declares, applied at start and again on SIGHUP (a reload).

The config file owns the topics it declares under `topics:`: at start and at every reload each is
created when missing, and its settings (topic_defaults overlaid with its own keys) replace those
it has, so a restart and a reload end in the same state. A declared topic's settings changed by a
client (Admin.alter_topic_config) are therefore set back to the file's at the next reload or
restart; change the file instead. The partition count cannot change: a different count in the file
is reported and left as it is. The access rules and `kafka.auto_create_topics` are applied too.
Everything else in the file (data directory, socket, limits, intervals, metrics, the rest of
`kafka:`) takes effect only at the next restart; a reload says which of them changed.

`ConfigReload` is the service on the loop: the SIGHUP handler only sets a flag (it may run between
any two bytecodes of the loop thread); the loop then ticks the service, which reads and checks the
file and applies it on the loop thread, like any admin request. A file that does not load (a typo)
is reported and nothing changes.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
from collections.abc import Callable
from typing import Any

from edgebus.errors import EdgebusError
from edgebus.log.manager import LogManager
from edgebus.log.topic_config import TopicConfig
from edgebus.server.handlers.admin import AdminHandlers, describe_changes
from edgebus.server.notify import Notifier
from edgebus.server.service import Service

log = logging.getLogger("edgebus.reload")

# Config sections that only a restart applies (a reload names the ones that changed).
RESTART_ONLY = ("data_dir", "socket", "socket_mode", "log_level", "log", "limits", "disk", "metrics",
                "kafka")  # the listener's settings, but for kafka.auto_create_topics (reloaded)


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
    """SIGHUP: read the config file again and apply its declared topics and topic_defaults."""

    timer_static = True  # set by the SIGHUP handler: the loop asks again after every signal

    def __init__(self, logs: LogManager, admin: AdminHandlers, config: Any,
                 load: Callable[[], Any] | None, notifier: Notifier | None = None) -> None:
        self.logs = logs
        self.admin = admin
        self.config = config  # the running configuration
        self.load = load  # reads the file again (None: running on built-in defaults)
        self.notifier = notifier
        self.requested = False
        self.reloads = 0  # reloads applied (a file that did not load is not counted)
        # edgebus/server/acl Authorizer: its rules are replaced at each reload (None: acl off).
        self.acl: Any = None
        # The Broker's KafkaFront (None: no Kafka listener): kafka.auto_create_topics is reloaded.
        self.kafka: Any = None

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

    def reload(self) -> bool:
        """Apply the file now; False if it did not load (the running settings stay)."""
        source = self.config.source
        if self.load is None:
            log.warning("received SIGHUP, but the supervisor runs on built-in defaults: no config "
                        "file to reload (start it with --config FILE)")
            return False
        log.info("received SIGHUP: reloading %s", source)
        if self.notifier is not None:
            self.notifier.reloading()
        try:
            new = self.load()
        except EdgebusError as e:
            log.error("reload: %s; the running configuration is kept", e)
            self._ready()
            return False
        # kafka.auto_create_topics is applied below: only the listener's other settings wait.
        auto = new.kafka.auto_create_topics
        new = dataclasses.replace(new, kafka=dataclasses.replace(
            new.kafka, auto_create_topics=self.config.kafka.auto_create_topics))
        changed = [k for k in RESTART_ONLY if getattr(new, k) != getattr(self.config, k)]
        if changed:
            log.warning("reload: %s changed in %s; that takes effect at the next restart",
                        ", ".join(changed), source)
        if new.acl.enabled != self.config.acl.enabled:
            log.warning("reload: acl.enabled changed in %s; that takes effect at the next restart",
                        source)
        if self.acl is not None:
            # The next request of every connection is decided by the new rules (its cache is
            # of the old generation); connections stay open.
            self.acl.apply(new.acl)
            log.info("reload: access control: %d rule(s), default %s", len(new.acl.policy().rules),
                     new.acl.default)
        self.admin.topic_defaults = topic_config_of(new.topic_defaults)
        if auto != self.config.kafka.auto_create_topics:
            self._set_auto_create(auto)
        errors = apply_declared_topics(self.logs, new.topics, self.admin.groups.topic_created)
        # What a later reload compares with: the file as applied, restart-only values as running.
        self.config = dataclasses.replace(
            self.config, topic_defaults=new.topic_defaults, topics=new.topics,
            kafka=dataclasses.replace(self.config.kafka, auto_create_topics=auto),
            acl=dataclasses.replace(new.acl, enabled=self.config.acl.enabled))
        self.reloads += 1
        log.info("reloaded %s: %d declared topic(s)%s", source, len(new.topics),
                 f", {len(errors)} could not be applied" if errors else "")
        self._ready()
        return True

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
