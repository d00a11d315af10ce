"""The Kafka front end as the supervisor holds it from start: the settings, the listeners and
the advertised address. The protocol package (kio and the handler modules, ~2 MB of an idle
supervisor's 22: issue 16) is imported, and the context and its services are made, at the first
Kafka connection (`context()`), so a supervisor no Kafka client talks to never loads it. This
module imports nothing of kio."""

from __future__ import annotations

import importlib.util
import logging
import time
from typing import TYPE_CHECKING

from edgebus.errors import ConfigError
from edgebus.opsconfig import split_listen
from edgebus.server.listeners.kafka import KafkaListener

if TYPE_CHECKING:
    import ssl

    from edgebus.config import KafkaSettings
    from edgebus.server.kafka.context import KafkaContext
    from edgebus.server.kafka.leader_epochs import LeaderEpochs
    from edgebus.server.service import SupervisorParts

log = logging.getLogger("edgebus.kafka")


class KafkaFront:
    """What Broker.kafka is: the settings and advertised address from start, the context from
    the first connection (the listeners ask `context()`)."""

    def __init__(self, parts: SupervisorParts, settings: KafkaSettings) -> None:
        self.parts = parts  # the Broker: its loop, logs, handlers (setup.make_context)
        self.settings = settings
        self.advertised: tuple[str, int] = ("127.0.0.1", 0)  # set by advertise() after binding
        self.ctx: KafkaContext | None = None
        self.epochs: LeaderEpochs | None = None  # made at start (prepare)

    def prepare(self) -> None:
        """At start, once the Broker's services are on the loop. A missing kio fails the start, as
        when it was imported then (find_spec imports nothing). With SASL the context is made at
        once: its credentials file is read then, and a bad one fails the start, not a client."""
        if importlib.util.find_spec("kio") is None:
            raise ConfigError("kafka.enabled: the Kafka listener needs the kio package, which is "
                              "not installed (pip install edgebus installs it); or set "
                              "kafka.enabled: false")
        # Leader epochs bumped where the log may have lost its tail, at the log end recovery left
        # (before anything is appended): leader_epochs.py. No kio in it.
        from edgebus.server.kafka.leader_epochs import LeaderEpochs

        self.epochs = LeaderEpochs(self.parts.logs.data_dir)
        self.epochs.bump_at_start(self.parts.logs)
        if self.settings.sasl_mechanisms:
            self.context()

    def context(self) -> KafkaContext:
        """The context, made (and its services put on the loop) the first time it is asked for."""
        if self.ctx is None:
            t0 = time.perf_counter()
            from edgebus.server.slim import import_kio_without_hypothesis

            import_kio_without_hypothesis()  # 15 MB less where the test extra is installed
            from edgebus.server.kafka.setup import make_context

            ctx, services = make_context(self.parts, self.settings)
            ctx.advertised = self.advertised
            if self.epochs is not None:
                ctx.parts["epochs"] = self.epochs
            # Parked fetches are answered at shutdown before the native handlers stop, as when
            # they were made at start.
            for s in services:
                self.parts.loop.add(s, before=self.parts.data)
            self.ctx = ctx
            log.info("Kafka protocol loaded in %.1f ms",
                     1000 * (time.perf_counter() - t0))
        return self.ctx


def make_kafka(parts: SupervisorParts, settings: KafkaSettings, tls: ssl.SSLContext | None
               ) -> tuple[KafkaFront, list[KafkaListener]]:
    """The front end and one listener per `kafka.listeners` address (nothing of kio loaded)."""
    front = KafkaFront(parts, settings)
    listeners = [KafkaListener(parts.loop, front, listen, tls) for listen in settings.listeners]
    return front, listeners


def advertise(front: KafkaFront, listeners: list[KafkaListener]) -> None:
    """After binding: the address Metadata names (kafka.advertised, else the first listener's;
    a listener on 0.0.0.0 advertises 127.0.0.1 unless kafka.advertised says otherwise)."""
    first = listeners[0]
    host, port = first.host, first.port
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    adv = front.settings.advertised
    if adv:
        if ":" in adv and not adv.endswith("]"):
            h, p = split_listen(adv)
            host, port = h, p
        else:
            host = adv.strip("[]")
    front.advertised = (host, port)
    if front.ctx is not None:
        front.ctx.advertised = front.advertised
