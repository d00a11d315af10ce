"""Event streams a reload takes away (docs/HTTP.md, "Security").

HTTP authenticates each request, and each fetch of a live tail passes the access rules, but a
stream is one request that lasts: without this, a user removed from `http.users_file` would keep
the stream it opened, and one whose rights an ACL reload narrowed would still get the records its
parked fetch is answered with. At every reload, each open stream whose user was removed (or its
secret changed), or which may no longer read its topic, is ended with an `error` event saying why
(ExchangeRunner.end_stream). Requests after that are authenticated and checked as usual.
"""

from __future__ import annotations

from typing import Any

from edgebus.acl.rules import Kind, Op
from edgebus.errors import AuthenticationError, AuthorizationError, EdgebusError


def revoked_users(old: dict[str, str], new: dict[str, str]) -> frozenset[str]:
    """Users whose secret no longer admits them: removed, or given another secret. With no
    users at all now nobody is asked (loopback only), so nobody is revoked."""
    if not new:
        return frozenset()
    return frozenset(u for u, secret in old.items() if new.get(u) != secret)


def end_revoked_streams(listener: Any, revoked: frozenset[str], acl: Any) -> int:
    """End each stream of `listener` (an HttpListener) whose user is in `revoked` or which the
    access rules (`acl`, an Authorizer; None: access control is off) no longer let read its
    topic. Returns how many were ended."""
    ended = 0
    for conn in list(listener.conns.values()):
        ex = conn.ex
        if ex is None or not ex.started or ex.reads is None or conn.closed:
            continue
        why: EdgebusError | None = None
        if conn.principal and conn.principal in revoked:
            why = AuthenticationError(
                f"user {conn.principal!r} is no longer in http.users_file (removed, or its "
                "secret changed) since the configuration was reloaded: this stream ends")
        elif acl is not None and not acl.allowed(conn, Kind.TOPIC, Op.READ, ex.reads):
            who = f"sasl:{conn.principal}" if conn.principal else "this client"
            why = AuthorizationError(
                f"{who} may no longer read topic {ex.reads!r} since the access rules were "
                "reloaded: this stream ends", operation="read", resource=f"topic:{ex.reads}")
        if why is not None:
            conn.end_stream(why)
            ended += 1
    return ended
