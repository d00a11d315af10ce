"""Wiring: the KafkaContext and the services its handler modules make. Imported at the first
Kafka connection (front.py), with the protocol package (kio) it brings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgebus.server.kafka.apis import collect
from edgebus.server.kafka.authz import guard
from edgebus.server.kafka.context import KafkaContext
from edgebus.server.service import Service, SupervisorParts

if TYPE_CHECKING:
    from edgebus.config import KafkaSettings


def make_context(parts: SupervisorParts, settings: KafkaSettings) -> tuple[KafkaContext, list[Service]]:
    """`parts`: the Broker (its loop, logs, data, admin, groups, durable and stats are taken
    here, once; handlers see only the context). Returns the context and the services the
    handler modules' init(ctx) made (parked fetches, ...)."""
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
    return ctx, services


def _module(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"edgebus.server.kafka.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"edgebus.server.kafka.{name}":
            raise
        return None
