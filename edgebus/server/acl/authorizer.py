"""The Authorizer: principals of a connection, decisions cached per connection and resource,
denials counted and logged (at most once a minute per principal, operation and resource).

A connection's principals are worked out at its first checked request (and again after a reload
or a replica handshake) from what the kernel or a verified handshake says (`Subject.of`); its
decisions are kept in its own cache, so a producer's thousandth PRODUCE to a topic costs one
dictionary lookup. A reload builds a new policy and bumps the generation, which every cache
compares before use: the next request of a connected client is decided by the new rules.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from edgebus.acl.policy import Policy
from edgebus.acl.principals import local_identities
from edgebus.acl.procnet import peer_uid
from edgebus.acl.rules import Kind, Op
from edgebus.acl.settings import AclSettings
from edgebus.errors import AuthorizationError

log = logging.getLogger("edgebus.acl")

# A denial is logged at most this often per (principal, operation, resource).
LOG_EVERY_S = 60.0
# Bounds: remembered log times, and cached decisions per connection (a client asking about a
# million topic names must not grow the supervisor without limit).
MAX_LOGGED = 10_000
MAX_CACHED = 4096
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux 4.13+
PEERGROUPS_BYTES = 1024  # CPython's getsockopt bound: 256 gids (more: the user database's list)

# One small integer per (kind, operation): the cache is a list of dicts indexed by it, so a
# check hashes only the resource name (enum members hash in Python code).
SLOTS: dict[tuple[Kind, Op], int] = {}
for _k in Kind:
    for _o in Op:
        SLOTS[(_k, _o)] = len(SLOTS)
_BY_SLOT = {v: k for k, v in SLOTS.items()}


@dataclass(frozen=True)
class Subject:
    """Who is asking, as the transport knows it. `identities` are principals already
    (`user:alice`, `uid:1000`, `group:sensors`, `node:gw-7`, `cert:CN`, `sasl:bob`); `trusted`:
    what the `owner` default grants (the supervisor's user, root, an authenticated replica link)."""

    identities: tuple[str, ...]
    trusted: bool = False
    # Not fields: what Authorizer.check reads of a connection (a Subject has no cache of its own).
    acl = None
    node = None

    @classmethod
    def local(cls, uid: int, gids: tuple[int, ...] = ()) -> Subject:
        return cls(tuple(local_identities(uid, gids)), uid in (0, os.geteuid()))

    @classmethod
    def of(cls, conn: Any) -> Subject:
        """The subject of a connection of any listener."""
        if conn.node is not None:  # a replica link that passed REPLICA_HELLO
            ids = [f"node:{conn.node}"]
            if conn.peer_name:
                ids.append(f"cert:{conn.peer_name}")
            return cls(tuple(ids), True)
        # The Kafka listener's SASL user, once authenticated (listeners/kafka.py `principal`).
        sasl = getattr(conn, "sasl_user", None) or getattr(conn, "principal", None)
        if sasl:
            return cls((f"sasl:{sasl}",), False)
        if conn.peer_name:
            return cls((f"cert:{conn.peer_name}",), False)
        uid = conn.uid
        if uid < 0 and getattr(conn.sock, "family", None) == socket.AF_UNIX:
            with contextlib.suppress(OSError):  # the listener did not ask: the kernel says
                uid = struct.unpack("3i", conn.sock.getsockopt(
                    socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        tcp = getattr(conn, "tcp_owner_lookup", False)
        if uid < 0 and tcp:
            found = peer_uid(conn.sock)  # a loopback TCP client: identd's answer
            uid = found if found is not None else -1
        if uid < 0:
            return cls((), False)  # nobody: only `allow *` rules and the allow default grant
        # TCP has no SO_PEERCRED (the kernel answers gid -1): the owner's groups are the user
        # database's, as a login of that user would have them.
        return cls.local(uid, user_groups(uid) if tcp else _peer_groups(conn.sock, uid))


def user_groups(uid: int) -> tuple[int, ...]:
    """The gids of `uid`'s passwd entry (its primary group first, then those it is a member
    of); none for a uid without one."""
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return ()
    return tuple(dict.fromkeys([pw.pw_gid, *os.getgrouplist(pw.pw_name, pw.pw_gid)]))


def _peer_groups(sock: Any, uid: int) -> tuple[int, ...]:
    """The peer's gids as of connect (SO_PEERCRED's gid, then SO_PEERGROUPS), primary first."""
    out: list[int] = []
    try:
        cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        out.append(struct.unpack("3i", cred)[2])
    except (OSError, AttributeError, struct.error):
        return ()  # not a Unix socket: the uid is what is known
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, PEERGROUPS_BYTES)
        out += struct.unpack(f"{len(raw) // 4}I", raw)
    except OSError as e:
        if e.errno != errno.ERANGE:
            return tuple(out)  # an older kernel: the primary gid is what is known
        with contextlib.suppress(KeyError):  # more groups than fit: the user database's list
            out += os.getgrouplist(pwd.getpwuid(uid).pw_name, out[0])
    return tuple(out)


class ConnAcl:
    """One connection's principals and cached decisions, for one policy generation."""

    __slots__ = ("all", "cache", "gen", "label", "node", "subject")

    def __init__(self, gen: int, subject: Subject, node: Any, everything: bool) -> None:
        self.gen = gen
        self.subject = subject
        self.node = node
        self.label = subject.identities[0] if subject.identities else "anonymous"
        self.all = everything  # no deny rule concerns it and the default grants it
        self.cache: list[dict[str, bool]] = [{} for _ in SLOTS]


class Authorizer:
    def __init__(self, policy: Policy, settings: AclSettings | None = None) -> None:
        self.policy = policy
        # The config's acl section the policy was built from (Kafka's CreateAcls/DeleteAcls
        # write its acl.file and apply the result, as a reload would).
        self.settings = settings
        self.gen = 0
        self.denied: dict[tuple[str, str], int] = {}  # (principal, operation) -> count
        self._logged: dict[tuple[str, str, str], float] = {}

    def apply(self, settings: AclSettings) -> None:
        """A reload (or a Kafka ACL change): the rules of `settings` from now on."""
        self.settings = settings
        self.set_policy(settings.policy())

    def set_policy(self, policy: Policy) -> None:
        """A reload: every connection's cache is stale from now on."""
        self.policy = policy
        self.gen += 1

    # --- the entry point ---------------------------------------------------------------------------
    def authorize(self, who: Any, op: Op | str, resource: str | tuple[Kind, str]) -> None:
        """Raise AuthorizationError unless `who` (a connection or a Subject) may do `op` on
        `resource` (`topic:NAME`, `group:NAME`, `cluster`, or (Kind, name))."""
        kind, name = _resource(resource)
        self.check(who, SLOTS[(kind, Op(op))], name)

    def check(self, who: Any, slot: int, name: str) -> None:
        """authorize() with the (kind, operation) pair as its slot number (the hot path)."""
        st = who.acl
        if st is None or st.gen != self.gen or st.node is not who.node:
            st = self.state(who)
        if st.all:
            return
        cache = st.cache[slot]
        ok = cache.get(name)
        if ok is None:
            ok = self._decide(st, slot, name, cache)
        if not ok:
            raise self._denied(st, slot, name)

    def allowed(self, who: Any, kind: Kind, op: Op, name: str) -> bool:
        """Whether `who` may (filters: metadata, list groups); a no is not counted as a denial."""
        st = who.acl
        if st is None or st.gen != self.gen or st.node is not who.node:
            st = self.state(who)
        if st.all:
            return True
        slot = SLOTS[(kind, op)]
        ok = st.cache[slot].get(name)
        return ok if ok is not None else self._decide(st, slot, name, st.cache[slot])

    # --- internals ---------------------------------------------------------------------------------
    def state(self, who: Any) -> ConnAcl:
        if isinstance(who, Subject):
            subject, node = who, None
        else:
            subject, node = Subject.of(who), who.node
        principals = self.policy.principals.apply(subject.identities)
        subject = Subject(principals, subject.trusted)
        p = self.policy
        grants = p.default == "allow" or (p.default == "owner" and subject.trusted)
        st = ConnAcl(self.gen, subject, node, grants and not p.denies_any(principals))
        if not isinstance(who, Subject):
            who.acl = st
        return st

    def _decide(self, st: ConnAcl, slot: int, name: str, cache: dict[str, bool]) -> bool:
        kind, op = _BY_SLOT[slot]
        d = self.policy.decide(st.subject.identities, op, kind, name, st.subject.trusted)
        if len(cache) >= MAX_CACHED:
            cache.clear()
        cache[name] = d.allowed
        return d.allowed

    def _denied(self, st: ConnAcl, slot: int, name: str) -> AuthorizationError:
        kind, op = _BY_SLOT[slot]
        key = (st.label, op.value)
        self.denied[key] = self.denied.get(key, 0) + 1
        what = "the cluster" if kind is Kind.CLUSTER else f"{kind.value} {name!r}"
        d = self.policy.decide(st.subject.identities, op, kind, name, st.subject.trusted)
        msg = f"{st.label} may not {op.value} {what}: {d.why}"
        now = time.monotonic()
        lkey = (st.label, op.value, f"{kind.value}:{name}")
        last = self._logged.get(lkey)
        if last is None or now - last >= LOG_EVERY_S:
            if len(self._logged) >= MAX_LOGGED:
                self._logged = {k: t for k, t in self._logged.items() if now - t < LOG_EVERY_S}
                if len(self._logged) >= MAX_LOGGED:
                    self._logged.clear()
            self._logged[lkey] = now
            log.warning("denied: %s (principals %s; %d denial(s) of %s by %s so far; logged at "
                        "most once a minute per principal, operation and resource)", msg,
                        ", ".join(st.subject.identities) or "none", self.denied[key], op.value,
                        st.label)
        return AuthorizationError(msg, operation=op.value,
                                  resource="cluster" if kind is Kind.CLUSTER
                                  else f"{kind.value}:{name}")

    def stats(self) -> dict[str, Any]:
        """For the status document and metrics: the policy and denials per principal and op."""
        return {
            "default": self.policy.default,
            "rules": len(self.policy.rules),
            "reloads": self.gen,
            "denied": [{"principal": p, "operation": o, "count": n}
                       for (p, o), n in sorted(self.denied.items())],
        }


def _resource(resource: str | tuple[Kind, str]) -> tuple[Kind, str]:
    if isinstance(resource, tuple):
        return Kind(resource[0]), resource[1]
    kind, _, name = resource.partition(":")
    return Kind(kind), name or "*"
