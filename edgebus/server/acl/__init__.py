"""Access control in the supervisor: the one place every request of every listener is checked.

`Authorizer.authorize(conn_or_subject, op, resource)` is the entry point: the dispatcher calls it
for every native request (socket and shared-memory rings alike, `checks.py` says what each API
needs), and any other listener (the Kafka protocol, an HTTP API) calls the same method with its
connection, or a `Subject` when it has none. The policy language is `edgebus/acl/`.
"""

from edgebus.server.acl.authorizer import Authorizer, Subject
from edgebus.server.acl.checks import build_checks, build_filters

__all__ = ["Authorizer", "Subject", "build_checks", "build_filters"]
