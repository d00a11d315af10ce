"""Access control: who may do what to which topic, group or the cluster (docs/SECURITY.md).

This package is the policy language and nothing else (no sockets, no server): rules and their
syntax (`rules.py`), the identities a transport knows turned into principals (`principals.py`),
the policy that decides (`policy.py`), the `acl:` config section and the rules file the CLI edits
(`settings.py`), and the identd-style owner lookup of a loopback TCP peer (`procnet.py`). The
supervisor applies it in one place, `edgebus/server/acl.py`, for every request of every listener.
"""

from edgebus.acl.policy import Decision, Policy
from edgebus.acl.rules import Kind, Op, Rule, parse_rule

__all__ = ["Decision", "Kind", "Op", "Policy", "Rule", "parse_rule"]
