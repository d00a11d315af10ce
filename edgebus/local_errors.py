"""The errors of edgebus that never cross the wire (codes from 100 up: docs/FORMAT.md section 8):
a supervisor or a target out of reach, a local timeout, the config, the data directory, the
service install, the socket. Re-exported by edgebus/errors.py, where every error is looked up.
"""

from __future__ import annotations

from edgebus.error_base import EdgebusError


class BrokerUnavailableError(EdgebusError):
    """The supervisor cannot be reached on its socket."""

    code = 100
    retriable = True
    hint = "is `edgebus serve` running? set EDGEBUS_SOCKET or socket= to its socket path"


class TargetUnavailableError(BrokerUnavailableError):
    """A replication target (a peer's replica listener, a Kafka or NATS cluster) did not answer,
    or closed the connection; the local supervisor is not the one in trouble."""

    code = 114
    hint = ("edgebus itself is fine: check that the replication target named here runs and "
            "answers, and the network path to it")


class OperationTimeoutError(EdgebusError):
    """A local wait (a future's get, a flush) ran out of time."""

    code = 101
    retriable = True


class ConfigError(EdgebusError):
    """The configuration file or an option is invalid; the message names the key."""

    code = 102


class ClosedError(EdgebusError):
    code = 103


class DataDirLockedError(EdgebusError):
    """Another process holds the data directory's lock (one supervisor per data directory)."""

    code = 104
    hint = "another edgebus supervisor is using this data directory; stop it or use another one"


class ServiceInstallError(EdgebusError):
    """`edgebus install-service` cannot install the systemd service as asked."""

    code = 105
    hint = "see `edgebus install-service --help` and the README section on running as a service"


class SocketDirError(EdgebusError):
    """The socket's directory is not safe to serve from: another user owns it or may write it,
    so they could remove the socket and put their own in its place."""

    code = 110
    hint = ("use a directory only you (or root) own and can write, e.g. `chmod 700 DIR`, or "
            "remove it and let the supervisor create it; or set `socket:` elsewhere")


class SocketInUseError(EdgebusError):
    """Another process serves the socket path: a second supervisor never takes it over."""

    code = 111
    hint = "stop the other supervisor first, or give this one another `--socket`"


class UntrustedSocketError(BrokerUnavailableError):
    """The process serving the socket runs as a user the client does not trust (not the
    client's own, root or the edgebus service user): nothing was sent to it."""

    code = 112
    retriable = False
    hint = ("another local user may have put a socket at this path; if that user's supervisor is "
            "meant to serve you, set EDGEBUS_SUPERVISOR_USER to that user")


class TransportUnavailableError(BrokerUnavailableError):
    """transport='shm' was asked for where shared-memory rings cannot work (no C module, not
    Linux): retrying cannot help, so it fails at once instead of waiting for a delivery timeout."""

    code = 113
    retriable = False
    hint = "use transport='auto' (the socket then), or install gcc and python3-dev and reinstall edgebus"


class IllegalStateError(EdgebusError):
    """A call that cannot work where it was made: `Producer.flush()` inside one of the
    producer's own callbacks (it would wait for acknowledgements that only the thread running
    the callback could take: Kafka's producer raises IllegalStateException there)."""

    code = 115
    hint = "flush from outside the callback (the thread that sent), or use close(), which does not wait there"
