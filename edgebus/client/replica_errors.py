"""The errors of a replica link (edgebus.client.replica.ReplicaLink), each naming what was tried
(the peer's address, the step: connect, TLS, REPLICA_HELLO, a request) and what to check there.

Why not the channel's own errors: the link reuses the Unix-socket client's channel, whose errors
speak of the local supervisor ("the supervisor closed the connection", hint "is `edgebus serve`
running? set EDGEBUS_SOCKET ..."), which sends an operator to the wrong machine when a peer's
address is wrong or refused. Raised as TargetUnavailableError (retriable: the replicator tries
again with backoff), and as subclasses that stay what callers catch (OperationTimeoutError for a
half-open link, ProtocolError for a service that is not a replica listener).
"""

from __future__ import annotations

import errno
import re
import socket

from edgebus.errors import (
    BrokerUnavailableError,
    EdgebusError,
    OperationTimeoutError,
    ProtocolError,
    TargetUnavailableError,
)

# What to check when the address may be the wrong one: the same words in every such error.
CHECK_ADDRESS = ("check that the link's address is the peer's `replica.listen` (its edgebus.yaml; "
                 "not its Kafka listener, metrics port or another service) and that its "
                 "`edgebus serve` runs")


class ReplicaTimeoutError(TargetUnavailableError, OperationTimeoutError):
    """A peer's replica listener did not answer in time: a half-open link, a hung or overloaded
    peer, or an address where another service accepts and stays silent."""

    hint = ("edgebus itself is fine: check the peer named here (running, not overloaded), the "
            "network path to it, and that the address is its replica listener")


class ReplicaProtocolError(ProtocolError):
    """What answered at the link's address does not speak the replica protocol."""

    hint = ("check that the address is the peer's replica listener (`replica.listen`), and that "
            "the link's `tls` matches it (TLS when the peer has `replica.tls_cert`)")


def connect_failed(address: str, e: OSError, timeout: float) -> TargetUnavailableError:
    """The TCP connection to the peer could not be made."""
    if isinstance(e, socket.gaierror):
        why = (f"the host name does not resolve ({e.strerror or e}): check the host part of the "
               "link's address and this host's DNS")
    elif e.errno == errno.ECONNREFUSED:
        why = f"connection refused: nothing listens there; {CHECK_ADDRESS}"
    elif isinstance(e, TimeoutError) or e.errno == errno.ETIMEDOUT:
        return ReplicaTimeoutError(
            f"cannot connect to the replica listener at {address}: no answer within "
            f"{timeout:.1f} s: check the network path (routing, a firewall dropping the port) "
            "and the address")
    elif e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        why = f"{e.strerror}: check the network path to the peer (routing, interface, VPN)"
    else:
        why = f"{e}; {CHECK_ADDRESS}"
    return TargetUnavailableError(f"cannot connect to the replica listener at {address}: {why}")


def hello_failed(address: str, e: BaseException, timeout: float) -> EdgebusError:
    """REPLICA_HELLO got no proper answer: something listens at the address, but it is not (or
    no longer) a replica listener that takes this link."""
    if isinstance(e, OperationTimeoutError):
        return ReplicaTimeoutError(
            f"no answer to REPLICA_HELLO from {address} within {timeout:.1f} s: something "
            f"accepted the connection but did not answer; {CHECK_ADDRESS} (a TLS listener "
            "reached without the link's `tls` is silent too)")
    if isinstance(e, ProtocolError):
        return ReplicaProtocolError(
            f"what answers at {address} does not speak the replica protocol ({_text(e)}): not "
            "the peer's replica listener, or one with TLS reached without the link's `tls`")
    return TargetUnavailableError(
        f"{address} closed the connection at REPLICA_HELLO ({_text(e)}): {CHECK_ADDRESS}; the "
        "peer's log says why it closed a link (at most 16 replica connections, a stopping "
        "supervisor)")


def link_lost(where: str, e: BaseException) -> EdgebusError:
    """A request on a link that was up failed: its typed error, phrased for the peer. Errors
    already phrased so (and the peer's own answers) pass through unchanged."""
    if isinstance(e, TargetUnavailableError | ReplicaProtocolError):
        return e
    if isinstance(e, OperationTimeoutError):
        # The words of the replicator's heartbeat bound (bridges/replicator/sessions.py), so
        # a half-open link reads the same whichever request noticed it first.
        return ReplicaTimeoutError(f"half-open link or dead target: {where} did not answer: "
                                   f"{_text(e)}; the link connects again")
    if isinstance(e, ProtocolError):
        return ReplicaProtocolError(f"{where} broke the replica protocol ({_text(e)}); the link "
                                    "connects again")
    if isinstance(e, BrokerUnavailableError | OSError):
        return TargetUnavailableError(f"lost the link to {where}: {_text(e)}: check that the "
                                      "peer's supervisor runs and the network path to it")
    return e if isinstance(e, EdgebusError) else TargetUnavailableError(f"{where}: {e}")


_CHANNEL_PREFIX = re.compile(r"^(?:not sent: )?lost the connection to tcp:\S+?: ")


def _text(e: BaseException) -> str:
    """The message without the local-socket hint a channel error carries, and without its
    words for the local supervisor (the peer is meant)."""
    text = str(e.args[0]) if isinstance(e, EdgebusError) and e.args else str(e)
    text = _CHANNEL_PREFIX.sub("", text)  # the channel's "lost the connection to tcp:h:p: "
    text = text.split(" (hint: ")[0]  # a wrapped error's own hint, at its end
    for local, peer in (("the supervisor closed the connection", "the peer closed the connection"),
                        ("the supervisor at ", "")):
        text = text.replace(local, peer)
    return text or type(e).__name__
