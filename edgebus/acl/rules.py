"""One access rule and its one-line syntax (docs/SECURITY.md, "Rules").

    EFFECT PRINCIPAL OPERATIONS RESOURCE
    allow  user:alice  read,write  topic:sensors.*
    deny   group:guest all         topic:billing
    allow  node:gw-7   all         topic:gw-7/*

A resource name is literal (`orders`), a prefix (`sensors.*`: one `*` at the end and no other
wildcard) or a pattern (`site-*-temp`, `room.[0-9]`: fnmatch wildcards), and may hold `%u`, the
name of the principal the rule matched (`allow user:* read,write topic:home.%u.*` gives every user
a prefix of their own). A principal is `KIND:NAME` (a NAME may hold wildcards too) or `*`.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from dataclasses import dataclass, field

# Bounds: a rule is one line of a file an operator writes; anything longer is a mistake.
MAX_RULE_CHARS = 1024
MAX_RULES = 10_000


class AclSyntaxError(ValueError):
    """A rule, principal or mapping that cannot be parsed; the message says what is wrong."""


class Op(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    CREATE = "create"
    DELETE = "delete"
    ALTER = "alter"
    DESCRIBE = "describe"
    STATUS = "status"
    ADMIN = "admin"


class Kind(enum.StrEnum):
    TOPIC = "topic"
    GROUP = "group"
    CLUSTER = "cluster"


# The operations each kind of resource has (issue 15): a rule naming another is refused.
OPS_OF: dict[Kind, frozenset[Op]] = {
    Kind.TOPIC: frozenset({Op.READ, Op.WRITE, Op.CREATE, Op.DELETE, Op.ALTER, Op.DESCRIBE}),
    Kind.GROUP: frozenset({Op.READ, Op.DESCRIBE, Op.DELETE}),
    Kind.CLUSTER: frozenset({Op.STATUS, Op.ADMIN}),
}
# As in Kafka: whoever may read, write, delete or alter a resource may also describe it (a
# producer needs the partition count, a consumer its group's committed offsets).
IMPLIES_DESCRIBE = frozenset({Op.READ, Op.WRITE, Op.DELETE, Op.ALTER})
# The kinds of principal a transport names (principals.py) or a mapping may produce.
PRINCIPAL_KINDS = ("user", "group", "uid", "gid", "node", "cert", "sasl")

_NAME_CHARS = re.compile(r"[A-Za-z0-9._\-/@%*?\[\]!]+")
_WILDCARD = re.compile(r"[*?\[]")


class Effect(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class Matcher:
    """A name test: `*` (anything), literal, prefix (`abc*`) or fnmatch pattern."""

    __slots__ = ("_re", "form", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._re: re.Pattern[str] | None = None
        if text == "*":
            self.form = "any"
        elif not _WILDCARD.search(text):
            self.form = "literal"
        elif text.endswith("*") and not _WILDCARD.search(text[:-1]):
            self.form = "prefix"
        else:
            self.form = "pattern"
            self._re = re.compile(fnmatch.translate(text))

    def __call__(self, name: str) -> bool:
        form = self.form
        if form == "literal":
            return name == self.text
        if form == "any":
            return True
        if form == "prefix":
            return name.startswith(self.text[:-1])
        assert self._re is not None
        return self._re.match(name) is not None


def parse_principal(text: str, *, pattern: bool = True) -> str:
    """`KIND:NAME` checked (or `*` when `pattern`); AclSyntaxError names what is wrong."""
    if pattern and text == "*":
        return text
    kind, sep, name = text.partition(":")
    if not sep or kind not in PRINCIPAL_KINDS:
        raise AclSyntaxError(f"principal {text!r} must be KIND:NAME with KIND one of "
                             f"{', '.join(PRINCIPAL_KINDS)}" + (", or *" if pattern else ""))
    if not name or not _NAME_CHARS.fullmatch(name) or (not pattern and _WILDCARD.search(name)):
        raise AclSyntaxError(f"principal {text!r}: the name may hold letters, digits and . _ - / @"
                             + (" and the wildcards * ? [...]" if pattern else ""))
    return text


def parse_resource(text: str) -> tuple[Kind, str]:
    """(kind, name pattern) from `topic:NAME`, `group:NAME` or `cluster`."""
    kind, _, name = text.partition(":")
    try:
        k = Kind(kind)
    except ValueError:
        raise AclSyntaxError(f"resource {text!r} must be topic:NAME, group:NAME or cluster") from None
    if k is Kind.CLUSTER:
        if name not in ("", "*"):
            raise AclSyntaxError(f"resource {text!r}: the cluster has no name (write `cluster`)")
        return k, "*"
    if not name or not _NAME_CHARS.fullmatch(name):
        raise AclSyntaxError(f"resource {text!r}: a {kind} name may hold letters, digits, . _ - / "
                             "and the wildcards * ? [...] and %u")
    return k, name


def parse_ops(text: str, kind: Kind) -> frozenset[Op]:
    """`read,write` or `all` for `kind`; an operation the kind does not have is refused."""
    if text == "all":
        return OPS_OF[kind]
    out = set()
    for word in text.split(","):
        try:
            op = Op(word)
        except ValueError:
            raise AclSyntaxError(f"unknown operation {word!r} (known: all, "
                                 f"{', '.join(o.value for o in Op)})") from None
        if op not in OPS_OF[kind]:
            raise AclSyntaxError(f"a {kind.value} has no operation {word!r} (it has "
                                 f"{', '.join(sorted(o.value for o in OPS_OF[kind]))})")
        out.add(op)
    return frozenset(out)


@dataclass(frozen=True)
class Rule:
    effect: Effect
    principal: str  # KIND:NAME, KIND:pattern or *
    ops: frozenset[Op]
    kind: Kind
    name: str  # the resource name: literal, prefix* or pattern, maybe with %u
    _pmatch: Matcher = field(init=False, compare=False, repr=False)
    _rmatch: Matcher | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pmatch", Matcher(self.principal))
        # With %u the name is only known per principal (policy.py substitutes it).
        object.__setattr__(self, "_rmatch", None if "%u" in self.name else Matcher(self.name))

    @property
    def allow(self) -> bool:
        return self.effect is Effect.ALLOW

    def principals_matched(self, principals: tuple[str, ...]) -> list[str]:
        m = self._pmatch
        if m.form == "any":
            return list(principals[:1])
        return [p for p in principals if m(p)]

    def resource_matches(self, name: str, principal: str) -> bool:
        m = self._rmatch
        if m is None:
            m = _templated(self.name, principal.partition(":")[2])
        return m(name)

    def text(self) -> str:
        ops = ("all" if self.ops == OPS_OF[self.kind]
               else ",".join(o.value for o in Op if o in self.ops))
        res = "cluster" if self.kind is Kind.CLUSTER else f"{self.kind.value}:{self.name}"
        return f"{self.effect.value} {self.principal} {ops} {res}"

    def __str__(self) -> str:
        return self.text()


_TEMPLATED: dict[tuple[str, str], Matcher] = {}


def _templated(name: str, who: str) -> Matcher:
    """The matcher of a %u resource for one principal's name (cached: a few users, few rules)."""
    key = (name, who)
    m = _TEMPLATED.get(key)
    if m is None:
        if len(_TEMPLATED) > 4096:
            _TEMPLATED.clear()
        # The principal's own name is literal text inside the pattern, never a wildcard.
        m = _TEMPLATED[key] = Matcher(name.replace("%u", _escape_glob(who)))
    return m


def _escape_glob(s: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", s)


def parse_rule(line: str) -> Rule:
    """One rule from its line (`allow user:alice read topic:sensors.*`)."""
    if len(line) > MAX_RULE_CHARS:
        raise AclSyntaxError(f"a rule is longer than {MAX_RULE_CHARS} characters")
    words = line.split()
    if len(words) != 4:
        raise AclSyntaxError(f"{line.strip()!r}: a rule is EFFECT PRINCIPAL OPERATIONS RESOURCE, "
                             "e.g. 'allow user:alice read,write topic:sensors.*'")
    effect, principal, ops, resource = words
    try:
        eff = Effect(effect)
    except ValueError:
        raise AclSyntaxError(f"{line.strip()!r}: a rule starts with allow or deny, "
                             f"not {effect!r}") from None
    kind, name = parse_resource(resource)
    try:
        return Rule(eff, parse_principal(principal), parse_ops(ops, kind), kind, name)
    except AclSyntaxError as e:
        raise AclSyntaxError(f"{line.strip()!r}: {e}") from None


def make_rule(effect: str, principal: str, ops: str, resource: str) -> Rule:
    """The rule of `edgebus acl add|remove PRINCIPAL OPS RESOURCE [--deny]`."""
    return parse_rule(f"{effect} {principal} {ops} {resource}")
