"""Wiring: the KafkaContext and one KafkaListener per `kafka.listeners` address."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgebus.opsconfig import split_listen
from edgebus.server.kafka.apis import collect
from edgebus.server.kafka.authz import guard
from edgebus.server.kafka.context import KafkaContext
from edgebus.server.listeners.kafka import KafkaListener
from edgebus.server.service import Service

if TYPE_CHECKING:
    import ssl

    from edgebus.config import KafkaSettings


def make_kafka(parts: Any, settings: KafkaSettings,
               tls: ssl.SSLContext | None) -> tuple[KafkaContext, list[KafkaListener], list[Service]]:
    """`parts`: the Broker (its loop, logs, data, admin, groups, durable and stats are taken
    here, once; handlers see only the context). Returns the context, the listeners and the
    services the handler modules' init(ctx) made (parked fetches, ...)."""
    ctx = KafkaContext(api=parts.loop, logs=parts.logs, data=parts.data, admin=parts.admin,
                       groups=parts.groups, durable=parts.durable, stats=parts.stats,
                       settings=settings, apis=collect())
    # Access control (edgebus/server/acl/, kafka/authz.py): the supervisor's one Authorizer.
    ctx.parts["acl"] = getattr(parts, "acl", None)
    ctx.apis = guard(ctx.apis, ctx.parts["acl"])
    # Idempotent producers and transactions: the supervisor's one state (server/txn/), shared
    # with native producers.
    for name, attr in (("producers", "producer_states"), ("txn", "txn")):
        if getattr(parts, attr, None) is not None:
            ctx.parts[name] = getattr(parts, attr)
    services: list[Service] = []
    for name in ("data", "groups", "admin", "sasl", "txn"):  # modules with state make it here
        mod = _module(name)
        if mod is not None and hasattr(mod, "init"):
            services.extend(mod.init(ctx) or ())
    listeners = [KafkaListener(parts.loop, ctx, listen, tls) for listen in settings.listeners]
    return ctx, listeners, services


def advertise(ctx: KafkaContext, listeners: list[KafkaListener]) -> None:
    """After binding: the address Metadata names (kafka.advertised, else the first listener's;
    a listener on 0.0.0.0 advertises 127.0.0.1 unless kafka.advertised says otherwise)."""
    first = listeners[0]
    host, port = first.host, first.port
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    adv = ctx.settings.advertised
    if adv:
        if ":" in adv and not adv.endswith("]"):
            h, p = split_listen(adv)
            host, port = h, p
        else:
            host = adv.strip("[]")
    ctx.advertised = (host, port)


def _module(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"edgebus.server.kafka.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"edgebus.server.kafka.{name}":
            raise
        return None
