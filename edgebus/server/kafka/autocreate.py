"""Topic auto-creation on the Kafka listener, as a Kafka broker does it.

Kafka creates a missing topic when a Metadata request names it and allows it
(`allow_auto_topic_creation`, v4+; always before v4) and the broker's `auto.create.topics.enable`
is on (its default). Here the broker setting is `kafka.auto_create_topics` (on by default, for the
same reason: `kcat -P -t new` and producers written for Kafka expect it), and the topic gets the
supervisor's `topic_defaults`, partitions included (Kafka's `num.partitions`).

Only Metadata creates, as in Kafka: a Produce to a missing topic is answered
UNKNOWN_TOPIC_OR_PARTITION, and the client's metadata refresh that follows creates it. Creating
needs what CreateTopics needs, create on the topic: without it the topic is answered
TOPIC_AUTHORIZATION_FAILED (Kafka's answer), and a principal that may not even describe it is
answered by the Metadata guard (authz.py) with nothing created.
"""

from __future__ import annotations

import logging
from typing import Any

from edgebus.acl.rules import Kind, Op
from edgebus.errors import EdgebusError, InvalidTopicError
from edgebus.log.topic_config import TopicConfig, validate_topic_name
from edgebus.server.kafka import errcodes as E
from edgebus.server.kafka.authz import DENIED_CODE, refused, visible
from edgebus.server.kafka.group_common import admin_of, groups_of

log = logging.getLogger("edgebus.kafka.admin")


def allowed(ctx: Any, version: int, req: Any) -> bool:
    """Whether this Metadata request may create the topics it names that do not exist."""
    if not ctx.settings.auto_create_topics:
        return False
    return version < 4 or bool(req.allow_auto_topic_creation)


def auto_create(ctx: Any, conn: Any, name: str) -> int:
    """Create the missing topic `name` for a Metadata request of `conn`; the Kafka error code
    of the topic's entry in the answer (NONE: it exists now)."""
    if not visible(ctx, conn, Kind.TOPIC, name):
        return E.UNKNOWN_TOPIC_OR_PARTITION  # the guard answers TOPIC_AUTHORIZATION_FAILED
    if refused(ctx, conn, Kind.TOPIC, Op.CREATE, name):
        return DENIED_CODE[Kind.TOPIC]
    try:
        validate_topic_name(name)
        cfg = TopicConfig.from_entries({}, base=admin_of(ctx).topic_defaults)
        ctx.logs.create_topic(name, cfg)
    except InvalidTopicError:
        return E.INVALID_TOPIC
    except EdgebusError as e:
        return E.code_of(e)
    groups_of(ctx).topic_created(name)  # a group subscribed by pattern takes it up
    log.info("created topic %s with %d partitions (Kafka Metadata, auto_create_topics, by %r)",
             name, cfg.partitions, conn)
    return E.NONE
