"""Which topics a replica link may read (REPLICA_FETCH): a topic brought down from this node by
a peer's replicator (docs/REPLICATION.md, "Bringing a peer's topics down").

A link is trusted by the `owner` default (it may append to its own mirrors), but reading is a
different matter: a link reads a topic only when an access rule names its node (or its
certificate) for it, e.g. `allow node:gateway-7 read topic:commands`. The default policy never
grants it, and with access control off (`acl.enabled: false`) no link reads anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgebus.acl.rules import Kind, Op
from edgebus.errors import AuthorizationError

if TYPE_CHECKING:
    from edgebus.server.acl import Authorizer


def link_may_read(acl: Authorizer | None, conn: Any, topic: str) -> None:
    """Raise AuthorizationError unless an explicit rule lets the link `conn` read `topic`."""
    from edgebus.server.acl import Subject

    hint = (f"add the rule 'allow node:{conn.node} read topic:{topic}' to this node's access "
            "rules (docs/SECURITY.md)")
    if acl is None:
        raise AuthorizationError(
            f"node:{conn.node} may not read topic {topic!r}: access control is off here "
            f"(acl.enabled: false), so no replica link reads anything; turn it on and {hint}",
            operation="read", resource=f"topic:{topic}")
    principals = acl.policy.principals.apply(Subject.of(conn).identities)
    d = acl.policy.decide(principals, Op.READ, Kind.TOPIC, topic, trusted=False)
    if not d.allowed or d.rule is None:
        raise AuthorizationError(
            f"node:{conn.node} may not read topic {topic!r} ({d.why}): a replica link reads "
            f"only what a rule grants it; {hint}",
            operation="read", resource=f"topic:{topic}")


def link_can_read(acl: Authorizer | None, conn: Any, topic: str) -> bool:
    """link_may_read as a yes or no (a metadata listing shows a link what it may read)."""
    try:
        link_may_read(acl, conn, topic)
    except AuthorizationError:
        return False
    return True
