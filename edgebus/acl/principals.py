"""From what a transport knows about a peer to the principals rules name.

The identities come from the kernel or a verified handshake, never from what a client says:
- Unix socket and shared-memory rings: SO_PEERCRED's uid and SO_PEERGROUPS' gids, as
  `user:NAME` (the passwd name; `user:UID` when there is none), `uid:N`, `group:NAME`, `gid:N`;
- a loopback TCP client without SASL: the uid owning its end of the connection
  (/proc/net/tcp, procnet.py), then the same names;
- a replica link: `node:NAME` after REPLICA_HELLO, `cert:CN` of a verified client certificate;
- a Kafka client with SASL: `sasl:NAME`.
The mapping (`acl.principals`) adds principals to an identity: `"sasl:*": "user:%u"` makes a SASL
user the local user of the same name, `"cert:gw7.example.com": "node:gateway-7"` names a node by
its certificate, `%u` being the identity's name. Identities stay principals themselves.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Iterable
from dataclasses import dataclass

from edgebus.acl.rules import AclSyntaxError, Matcher, parse_principal

MAX_MAPPINGS = 1000


@dataclass(frozen=True)
class PrincipalMap:
    """Identity pattern -> principal templates, in the order written."""

    entries: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def parse(cls, doc: object) -> PrincipalMap:
        """From the YAML mapping `{"sasl:*": "user:%u", "cert:x": ["node:a", "group:b"]}`."""
        if doc is None:
            return cls()
        if not isinstance(doc, dict):
            raise AclSyntaxError("expected a mapping of identity pattern -> principal(s)")
        if len(doc) > MAX_MAPPINGS:
            raise AclSyntaxError(f"more than {MAX_MAPPINGS} mappings")
        out = []
        for pat, targets in doc.items():
            if not isinstance(pat, str):
                raise AclSyntaxError(f"{pat!r} is not an identity pattern like 'sasl:*'")
            parse_principal(pat)
            items = [targets] if isinstance(targets, str) else targets
            if not isinstance(items, list) or not items or not all(isinstance(t, str) for t in items):
                raise AclSyntaxError(f"{pat}: expected a principal or a list of them")
            for t in items:
                parse_principal(t.replace("%u", "u"), pattern=False)
            out.append((pat, tuple(items)))
        return cls(tuple(out))

    def apply(self, identities: Iterable[str]) -> tuple[str, ...]:
        """The identities and every principal the mapping adds to them, each once, in order."""
        ids = list(identities)
        seen = dict.fromkeys(ids)
        for pat, targets in self.entries:
            m = Matcher(pat)
            for ident in ids:
                if m(ident):
                    name = ident.partition(":")[2]
                    for t in targets:
                        seen.setdefault(t.replace("%u", name))
        return tuple(seen)


def user_principal(uid: int) -> str:
    try:
        return f"user:{pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"user:{uid}"


def group_principal(gid: int) -> str:
    try:
        return f"group:{grp.getgrgid(gid).gr_name}"
    except KeyError:
        return f"group:{gid}"


def local_identities(uid: int, gids: Iterable[int]) -> list[str]:
    """`user:NAME`, `uid:N`, then `group:NAME`, `gid:N` for each gid (primary first)."""
    out = [user_principal(uid), f"uid:{uid}"]
    for g in dict.fromkeys(gids):
        out += [group_principal(g), f"gid:{g}"]
    return out
