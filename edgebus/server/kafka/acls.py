"""Kafka's DescribeAcls, CreateAcls and DeleteAcls (v1-3), on the supervisor's own rules.

Kafka's ACL (resource type, name, pattern type, principal, host, operation, permission) is one
edgebus rule (docs/SECURITY.md): TOPIC/GROUP/CLUSTER; LITERAL `name` (`*`: any) or PREFIXED
`name*`; `User:alice` is `user:alice` (any KIND:NAME likewise, `User:*` is `*`); host `*` only;
READ WRITE CREATE DELETE ALTER DESCRIBE (DESCRIBE_CONFIGS as describe, ALTER_CONFIGS as alter;
on the cluster ALTER and CLUSTER_ACTION as admin, DESCRIBE as status), ALL; ALLOW or DENY.
Created rules go to `acl.file` (as `edgebus acl add` writes them) and apply at once; rules
written in the config file itself are listed but cannot be deleted this way. Describing needs
status on the cluster, creating and deleting admin (Kafka: DESCRIBE, ALTER on the cluster).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from edgebus.acl.rules import OPS_OF, AclSyntaxError, Effect, Kind, Matcher, Op, Rule, parse_rule
from edgebus.acl.settings import read_rules_file, write_rules_file
from edgebus.config import read_yaml_file
from edgebus.errors import AuthorizationError
from edgebus.server.kafka.apis import KafkaApi
from edgebus.server.kafka.codec import build, response_module

if TYPE_CHECKING:
    from edgebus.server.acl import Authorizer
    from edgebus.server.kafka.context import KafkaContext
    from edgebus.server.listeners.stream import Connection

DESCRIBE_ACLS, CREATE_ACLS, DELETE_ACLS = 29, 30, 31
ANY, MATCH, LITERAL, PREFIXED = 1, 2, 3, 4  # pattern types (and ANY for the other enums)
ALL, ALLOW, DENY = 2, 3, 2
KIND_OF = {2: Kind.TOPIC, 3: Kind.GROUP, 4: Kind.CLUSTER}
CODE_OF = {v: k for k, v in KIND_OF.items()}
_OPS = {3: Op.READ, 4: Op.WRITE, 5: Op.CREATE, 6: Op.DELETE, 7: Op.ALTER, 8: Op.DESCRIBE,
        10: Op.DESCRIBE, 11: Op.ALTER}
_CLUSTER_OPS = {7: Op.ADMIN, 9: Op.ADMIN, 8: Op.STATUS, 10: Op.STATUS}
_OP_CODE = {Op.READ: 3, Op.WRITE: 4, Op.CREATE: 5, Op.DELETE: 6, Op.ALTER: 7, Op.DESCRIBE: 8,
            Op.ADMIN: 7, Op.STATUS: 8}


class Unsupported(ValueError):
    """A Kafka ACL that edgebus rules cannot say (the message says what)."""


def _acl(ctx: KafkaContext) -> Authorizer | None:
    a: Authorizer | None = ctx.parts.get("acl")
    return a


# --- Kafka ACL <-> rule ----------------------------------------------------------------------------
def to_rule(c: Any) -> Rule:
    kind = KIND_OF.get(int(c.resource_type))
    if kind is None:
        raise Unsupported(f"resource type {c.resource_type} (edgebus has topics, groups and the "
                          "cluster)")
    if c.host != "*":
        raise Unsupported("rules apply to every host; give host '*'")
    ptype = int(c.resource_pattern_type)
    if ptype not in (LITERAL, PREFIXED):
        raise Unsupported(f"pattern type {ptype} (LITERAL or PREFIXED)")
    op = int(c.operation)
    ops = "all" if op == ALL else (_CLUSTER_OPS if kind is Kind.CLUSTER else _OPS).get(op)
    if ops is None:
        raise Unsupported(f"operation {op} on a {kind.value}")
    kafka_kind, _, who = c.principal.partition(":")
    principal = "*" if who == "*" else f"{kafka_kind.lower()}:{who}"
    name = c.resource_name if ptype == LITERAL else f"{c.resource_name}*"
    resource = "cluster" if kind is Kind.CLUSTER else f"{kind.value}:{name}"
    effect = "allow" if int(c.permission_type) == ALLOW else "deny"
    if int(c.permission_type) not in (ALLOW, DENY):
        raise Unsupported(f"permission type {c.permission_type}")
    try:
        return parse_rule(f"{effect} {principal} {ops if isinstance(ops, str) else ops.value} "
                          f"{resource}")
    except AclSyntaxError as e:
        raise Unsupported(str(e)) from None


def descriptions(r: Rule) -> list[tuple[int, str, int, str, int, int]]:
    """The Kafka ACLs of a rule: (resource type, name, pattern type, principal, operation,
    permission), one per operation (ALL when the rule has every operation of its kind). A
    wildcard pattern in the middle of a name is listed as LITERAL (Kafka has no such type)."""
    m = Matcher(r.name)
    name, ptype = (r.name[:-1], PREFIXED) if m.form == "prefix" else (r.name, LITERAL)
    if r.kind is Kind.CLUSTER:
        name = "kafka-cluster"
    if r.principal == "*":
        principal = "User:*"
    else:
        kind, _, who = r.principal.partition(":")
        principal = f"{kind.capitalize()}:{who}"
    perm = ALLOW if r.effect is Effect.ALLOW else DENY
    ops = [ALL] if r.ops == OPS_OF[r.kind] else sorted({_OP_CODE[o] for o in r.ops})
    return [(CODE_OF[r.kind], name, ptype, principal, op, perm) for op in ops]


def _matches(f: Any, d: tuple[int, str, int, str, int, int]) -> bool:
    rtype, name, ptype, principal, op, perm = d
    pt = int(f.pattern_type_filter)
    return ((int(f.resource_type_filter) in (ANY, rtype))
            and (f.resource_name_filter is None or f.resource_name_filter == name)
            and (pt in (ANY, MATCH) or pt == ptype)
            and (f.principal_filter is None or f.principal_filter == principal)
            and (f.host_filter is None or f.host_filter == "*")
            and (int(f.operation) in (ANY, op)) and (int(f.permission_type) in (ANY, perm)))


def _refused(a: Authorizer | None, conn: Any, op: str) -> str | None:
    if a is None:
        return "access control is off on this supervisor (acl.enabled: false)"
    try:
        a.authorize(conn, op, "cluster")
    except AuthorizationError as e:
        return str(e)
    return None


def _refusal(a: Authorizer | None, conn: Any, op: str,
             need_file: bool = False) -> tuple[ErrorCode, str] | None:
    """Why a request is refused, with the code that says so (None: it is not): access control
    off, or for a change no acl.file to keep the rules in (security_disabled), or the principal
    may not (cluster_authorization_failed)."""
    why = _refused(a, conn, op)
    if why is not None:
        return (ErrorCode.security_disabled if a is None
                else ErrorCode.cluster_authorization_failed), why
    why = _no_file(a) if need_file else None
    return None if why is None else (ErrorCode.security_disabled, why)


# --- the handlers ----------------------------------------------------------------------------------
def describe_acls(ctx: KafkaContext, conn: Connection, header: Any, req: Any) -> Any:
    mod = response_module(DESCRIBE_ACLS, header.request_api_version)
    a = _acl(ctx)
    if (refusal := _refusal(a, conn, "status")) is not None:
        code, why = refusal
        return build(mod.DescribeAclsResponse, error_code=code, error_message=why, resources=())
    assert a is not None
    grouped: dict[tuple[int, str, int], list[Any]] = {}
    for r in a.policy.rules:
        for d in descriptions(r):
            if _matches(req, d):
                grouped.setdefault(d[:3], []).append(build(
                    mod.AclDescription, principal=d[3], host="*", operation=d[4],
                    permission_type=d[5]))
    resources = tuple(build(mod.DescribeAclsResource, resource_type=k[0], resource_name=k[1],
                            pattern_type=k[2], acls=tuple(v)) for k, v in grouped.items())
    return build(mod.DescribeAclsResponse, error_code=ErrorCode.none, error_message=None,
                 resources=resources)


def create_acls(ctx: KafkaContext, conn: Connection, header: Any, req: Any) -> Any:
    mod = response_module(CREATE_ACLS, header.request_api_version)
    a = _acl(ctx)
    if (refusal := _refusal(a, conn, "admin", need_file=True)) is not None:
        code, why = refusal
        return build(mod.CreateAclsResponse, results=tuple(
            build(mod.AclCreationResult, error_code=code, error_message=why)
            for _ in req.creations))
    assert a is not None and a.settings is not None and a.settings.file is not None
    path = a.settings.file
    rules, mapping = read_rules_file(path, read_yaml_file)
    results = []
    for c in req.creations:
        try:
            r = to_rule(c)
        except Unsupported as e:
            results.append(build(mod.AclCreationResult, error_code=ErrorCode.invalid_request,
                                 error_message=f"edgebus cannot say this ACL: {e}"))
            continue
        if r not in rules:
            rules = (*rules, r)
        results.append(build(mod.AclCreationResult, error_code=ErrorCode.none, error_message=None))
    _save(a, path, rules, mapping)
    return build(mod.CreateAclsResponse, results=tuple(results))


def delete_acls(ctx: KafkaContext, conn: Connection, header: Any, req: Any) -> Any:
    mod = response_module(DELETE_ACLS, header.request_api_version)
    a = _acl(ctx)
    if (refusal := _refusal(a, conn, "admin", need_file=True)) is not None:
        code, why = refusal
        return build(mod.DeleteAclsResponse, filter_results=tuple(
            build(mod.DeleteAclsFilterResult, error_code=code, error_message=why, matching_acls=())
            for _ in req.filters))
    assert a is not None and a.settings is not None and a.settings.file is not None
    path = a.settings.file
    rules, mapping = read_rules_file(path, read_yaml_file)
    inline = a.settings.rules
    out = []
    for f in req.filters:
        matched: list[tuple[tuple[int, str, int, str, int, int], str | None]] = []
        kept: list[Rule] = []
        for r in rules:
            hit = [d for d in descriptions(r) if _matches(f, d)]
            matched += [(d, None) for d in hit]
            if not hit:
                kept.append(r)
            elif hit != descriptions(r):  # some operations of the rule: keep the others
                gone = {_OP_CODE.get(o) for o in r.ops if any(d[4] == _OP_CODE[o] for d in hit)}
                rest = frozenset(o for o in r.ops if _OP_CODE[o] not in gone)
                if rest:
                    kept.append(dataclasses.replace(r, ops=rest))
        for r in inline:
            matched += [(d, "written in the config file's acl.rules: edit that file")
                        for d in descriptions(r) if _matches(f, d)]
        rules = tuple(kept)
        out.append(build(mod.DeleteAclsFilterResult, error_code=ErrorCode.none, error_message=None,
                         matching_acls=tuple(
                             build(mod.DeleteAclsMatchingAcl,
                                   error_code=ErrorCode.invalid_request if err else ErrorCode.none,
                                   error_message=err, resource_type=d[0], resource_name=d[1],
                                   pattern_type=d[2], principal=d[3], host="*", operation=d[4],
                                   permission_type=d[5])
                             for d, err in matched)))
    _save(a, path, rules, mapping)
    return build(mod.DeleteAclsResponse, filter_results=tuple(out))


def _no_file(a: Authorizer | None) -> str | None:
    if a is None or a.settings is None or a.settings.file is None:
        return ("the supervisor's config names no acl.file, where created rules are kept "
                "(docs/SECURITY.md)")
    return None


def _save(a: Authorizer, path: Any, rules: tuple[Rule, ...], mapping: Any) -> None:
    """Write the file, then apply it with the config's own rules (as a reload would)."""
    assert a.settings is not None
    write_rules_file(path, rules, mapping)
    a.apply(dataclasses.replace(a.settings, file_rules=rules, file_principals=mapping))


APIS: list[KafkaApi] = [
    KafkaApi(DESCRIBE_ACLS, 1, 3, describe_acls),
    KafkaApi(CREATE_ACLS, 1, 3, create_acls),
    KafkaApi(DELETE_ACLS, 1, 3, delete_acls),
]
