"""The decision: may these principals do this operation on this resource?

Order (docs/SECURITY.md): a matching `deny` rule refuses, whatever else matches (deny wins); else a
matching `allow` rule grants (an allow of read, write, delete or alter grants describe too, and an
allow of `admin` on the cluster grants everything); else the default policy decides:
`owner` (the default) grants the supervisor's own user and root, and replica links that passed
their handshake, and refuses everyone else; `allow` grants all; `deny` refuses all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edgebus.acl.principals import PrincipalMap
from edgebus.acl.rules import IMPLIES_DESCRIBE, Kind, Op, Rule

DEFAULTS = ("owner", "allow", "deny")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: Rule | None  # the rule that decided; None: the default policy
    why: str


class Policy:
    """Rules, the principal mapping and the default policy; immutable once built (a reload
    builds a new one)."""

    def __init__(self, rules: Iterable[Rule] = (), default: str = "owner",
                 principals: PrincipalMap | None = None) -> None:
        if default not in DEFAULTS:
            raise ValueError(f"default policy must be one of {', '.join(DEFAULTS)}, got {default!r}")
        self.rules = tuple(rules)
        self.default = default
        self.principals = principals or PrincipalMap()
        self._deny = {k: tuple(r for r in self.rules if not r.allow and r.kind is k) for k in Kind}
        self._allow = {k: tuple(r for r in self.rules if r.allow and r.kind is k) for k in Kind}
        self._admin = tuple(r for r in self._allow[Kind.CLUSTER] if Op.ADMIN in r.ops)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Policy) and self.rules == other.rules
                and self.default == other.default and self.principals == other.principals)

    def __hash__(self) -> int:
        return hash((self.rules, self.default))

    def denies_any(self, principals: tuple[str, ...]) -> bool:
        """Whether some deny rule could apply to these principals (else a trusted connection
        under the owner or allow default is granted everything without looking further)."""
        return any(r.principals_matched(principals) for k in Kind for r in self._deny[k])

    def decide(self, principals: tuple[str, ...], op: Op, kind: Kind, name: str,
               trusted: bool) -> Decision:
        """`trusted`: the connection is the supervisor's user, root or an authenticated replica
        link (what the `owner` default grants)."""
        for r in self._deny[kind]:
            if op in r.ops and _matches(r, principals, name):
                return Decision(False, r, f"rule '{r}'")
        for r in self._allow[kind]:
            if (op in r.ops or (op is Op.DESCRIBE and r.ops & IMPLIES_DESCRIBE)) \
                    and _matches(r, principals, name):
                return Decision(True, r, f"rule '{r}'")
        for r in self._admin:
            if r.principals_matched(principals):
                return Decision(True, r, f"rule '{r}'")
        if self.default == "allow" or (self.default == "owner" and trusted):
            return Decision(True, None, f"default policy {self.default}")
        return Decision(False, None, f"no rule allows it (default policy {self.default})")


def _matches(r: Rule, principals: tuple[str, ...], name: str) -> bool:
    return any(r.resource_matches(name, p) for p in r.principals_matched(principals))
