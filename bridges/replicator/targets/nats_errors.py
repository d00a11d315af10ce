"""The NATS targets' errors (targets/nats.py up, nats_pull.py down): what a JetStream API error
or a nats-py exception becomes, so that the link retries what a cluster in trouble causes, and
holds what only an operator can fix, with a hint that names the NATS server.
"""

from __future__ import annotations

import asyncio
from typing import Any

from edgebus.errors import (
    AuthenticationError,
    EdgebusError,
    OperationTimeoutError,
    ReplicaDivergedError,
    TargetUnavailableError,
    UnknownServerError,
)

NATS_HINT = ("edgebus itself is fine: check that the NATS server named here runs and answers "
             "(not stopped, hung or overloaded), the network path to it, and that JetStream has "
             "a leader (`nats server report jetstream`)")


class NatsUnavailableError(TargetUnavailableError):
    """The NATS cluster did not answer or closed the connection (retried by the link)."""

    hint = NATS_HINT


class NatsTimeoutError(NatsUnavailableError, OperationTimeoutError):
    """A NATS server took longer than the bound to answer: the connection may stay up while the
    server is stopped or hung (a half-open link)."""

    hint = NATS_HINT

# JetStream API error codes the target acts on (nats-server server/errors.json).
ERR_STREAM_NOT_FOUND = 10059
ERR_NO_MESSAGE = 10037
ERR_WRONG_LAST_SEQUENCE = 10071


def api_error(err: dict[str, Any], where: str) -> EdgebusError:
    code, text = err.get("err_code"), err.get("description", "")
    if code == ERR_WRONG_LAST_SEQUENCE:
        return ReplicaDivergedError(
            f"{where}{text}: the subject moved under the link (a stale batch of an earlier "
            "session, or another publisher); the cursor is read again")
    if err.get("code") in (503, 408) or "incomplete" in text:
        return NatsUnavailableError(f"{where}{text} (JetStream error {code})")
    return UnknownServerError(f"{where}{text} (JetStream error {code})")


def mapped_error(e: Exception, where: str) -> EdgebusError:
    import nats.errors as ne

    text = str(e) or type(e).__name__
    if "authorization" in text.lower() or isinstance(e, ne.AuthorizationError):
        return AuthenticationError(f"{where}: the NATS server refused our credentials: {text}")
    if isinstance(e, ne.TimeoutError | asyncio.TimeoutError):
        return NatsTimeoutError(f"{where}: no answer within the timeout")
    if isinstance(e, ConnectionRefusedError):
        return NatsUnavailableError(
            f"{where}: connection refused: nothing listens there (the NATS server is down, or "
            "the link's servers name another port)")
    return NatsUnavailableError(f"{where}: {type(e).__name__}: {text}")
