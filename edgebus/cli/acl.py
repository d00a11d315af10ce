"""`edgebus acl list|add|remove|check`: the access rules of a supervisor's config (docs/SECURITY.md).

The rules live in the config file (`acl.rules`) and in the file it names (`acl.file`); `add` and
`remove` edit the latter (atomically), then ask the running supervisor to reload (SIGHUP, to the
pid the kernel names as the socket's server) and wait for its outcome (cli/reload.py); a reload
applies them to the next request of every connected client. `check` decides offline, from the
files, as the supervisor would.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import sys
from pathlib import Path
from typing import Any

from edgebus import paths
from edgebus.acl.principals import PrincipalMap, local_identities
from edgebus.acl.rules import AclSyntaxError, Kind, Op, Rule, make_rule, parse_principal, parse_resource
from edgebus.acl.settings import AclSettings, read_rules_file, write_rules_file
from edgebus.config import load_config, read_yaml_file
from edgebus.errors import ConfigError, EdgebusError

EXIT_DENIED = 3  # `acl check`: the operation would be refused


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("acl", help="list, add, remove or check access rules (docs/SECURITY.md)")
    asub = p.add_subparsers(dest="acl_command", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", metavar="FILE",
                       help=f"the supervisor's config (default: $EDGEBUS_CONFIG, else "
                            f"{paths.SYSTEM_CONFIG} if it exists)")

    def rule_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("principal", metavar="PRINCIPAL",
                       help="user:NAME, group:NAME, node:NAME, sasl:NAME, ... or *")
        q.add_argument("op", metavar="OP", help="read, write, create, delete, alter, describe, "
                                                "status, admin, a comma list, or all")
        q.add_argument("resource", metavar="RESOURCE",
                       help="topic:NAME, group:NAME or cluster (NAME: literal, prefix* or pattern)")

    ls = asub.add_parser("list", help="the default policy, the rules and the principal mapping")
    common(ls)
    ls.set_defaults(func=run_list)
    for name, what in (("add", "add a rule to acl.file and reload the supervisor"),
                       ("remove", "remove a rule from acl.file and reload the supervisor")):
        q = asub.add_parser(name, help=what)
        rule_args(q)
        q.add_argument("--deny", action="store_true", help="a deny rule (default: allow)")
        q.add_argument("--no-reload", action="store_true",
                       help="only edit the file (reload later: systemctl reload edgebus)")
        common(q)
        q.set_defaults(func=run_add if name == "add" else run_remove)
    c = asub.add_parser("check", help="would the supervisor allow it? (exit status 0 yes, "
                                      f"{EXIT_DENIED} no)")
    rule_args(c)
    common(c)
    c.set_defaults(func=run_check)


def _config(args: argparse.Namespace) -> Any:
    path = args.config or os.environ.get(paths.ENV_CONFIG) or (
        paths.SYSTEM_CONFIG if paths.SYSTEM_CONFIG.exists() else None)
    return load_config(path)


def run_list(args: argparse.Namespace) -> int:
    acl: AclSettings = _config(args).acl
    print(f"access control: {'on' if acl.enabled else 'OFF (acl.enabled: false)'}, "
          f"default policy {acl.default}")
    for where, rules in (("config", acl.rules), (str(acl.file or "acl.file"), acl.file_rules)):
        for r in rules:
            print(f"{r.text():60s}  # {where}")
    for where, mapping in (("config", acl.principals), (str(acl.file), acl.file_principals)):
        for pat, targets in mapping.entries:
            print(f"principal {pat} -> {', '.join(targets)}  # {where}")
    return 0


def _rule(args: argparse.Namespace) -> Rule:
    try:
        return make_rule("deny" if args.deny else "allow", args.principal, args.op, args.resource)
    except AclSyntaxError as e:
        raise ConfigError(str(e)) from None


def _file(config: Any) -> Path:
    if config.source is None:  # built-in defaults: no file to name the rules file
        raise ConfigError(
            "no config file (none given with --config or $EDGEBUS_CONFIG, and "
            f"{paths.SYSTEM_CONFIG} does not exist): `edgebus acl add|remove` edit the rules "
            "file that the supervisor's config names (acl.file); pass that config with --config")
    if config.acl.file is None:
        where = config.source
        raise ConfigError(f"{where} names no acl.file: add `acl: {{file: acl.yaml}}` to it, the "
                          "file `edgebus acl add|remove` edit (or write rules under acl.rules)")
    return Path(config.acl.file)


def run_add(args: argparse.Namespace) -> int:
    config = _config(args)
    path, rule = _file(config), _rule(args)
    rules, mapping = read_rules_file(path, read_yaml_file)
    if rule in rules or rule in config.acl.rules:
        print(f"already there: {rule}")
        return 0
    write_rules_file(path, (*rules, rule), mapping)
    print(f"added to {path}: {rule}")
    return _reload(args, config)


def run_remove(args: argparse.Namespace) -> int:
    config = _config(args)
    path, rule = _file(config), _rule(args)
    rules, mapping = read_rules_file(path, read_yaml_file)
    if rule not in rules:
        inline = " (it is in the config file's acl.rules: edit that file)" \
            if rule in config.acl.rules else ""
        raise EdgebusError(f"no rule '{rule}' in {path}{inline}")
    write_rules_file(path, tuple(r for r in rules if r != rule), mapping)
    print(f"removed from {path}: {rule}")
    return _reload(args, config)


def _reload(args: argparse.Namespace, config: Any) -> int:
    """SIGHUP to the process serving the config's socket (as the kernel names it), then its
    outcome, as `edgebus reload` says it (exit 1 when the file did not load)."""
    if args.no_reload:
        return 0
    from edgebus import Admin
    from edgebus.cli.reload import sighup_and_wait
    from edgebus.errors import BrokerUnavailableError

    try:
        admin = Admin(socket=str(config.socket))
    except (OSError, BrokerUnavailableError):
        print(f"no supervisor answers on {config.socket}: the rules apply when it starts",
              file=sys.stderr)
        return 0
    with admin:
        if admin.status().get("reload") is None:  # an older supervisor: reports no reloads
            raise EdgebusError("this supervisor does not report reloads (an older version): "
                               "send it SIGHUP (systemctl reload edgebus)")
        after, pid = sighup_and_wait(admin, str(config.socket))
    if after["last_error"]:
        print(f"edgebus: error: the supervisor (pid {pid}) did not apply {after['config']}: "
              f"{after['last_error']}; it keeps its running rules (the file has the new one: "
              "fix the error, then `edgebus reload`)", file=sys.stderr)
        return 1
    print(f"the supervisor (pid {pid}) reloaded {after['config']}: the rules apply")
    return 0


def run_check(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        principal = parse_principal(args.principal, pattern=False)
        kind, name = parse_resource(args.resource)
        op = Op(args.op)
    except (AclSyntaxError, ValueError) as e:
        raise ConfigError(str(e)) from None
    if kind is Kind.CLUSTER:
        name = "*"
    policy = config.acl.policy()
    ids, trusted, owner = _identities(principal, config)
    principals = PrincipalMap(policy.principals.entries).apply(ids)
    d = policy.decide(principals, op, kind, name, trusted)
    what = "the cluster" if kind is Kind.CLUSTER else f"{kind.value} {name!r}"
    print(f"{'ALLOW' if d.allowed else 'DENY'}: {principal} {op.value} {what}: {d.why}")
    print(f"  principals: {', '.join(principals)}; the supervisor's user: {owner}")
    return 0 if d.allowed else EXIT_DENIED


def _identities(principal: str, config: Any) -> tuple[list[str], bool, str]:
    """What a connection of `principal` would have: a local user also has its uid and its
    groups (the kernel would report them), and is trusted if it is root or the user owning the
    data directory (the supervisor's, when it runs)."""
    try:
        owner_uid = config.data_dir.stat().st_uid
    except OSError:
        owner_uid = os.geteuid()
    owner = _user_name(owner_uid)
    kind, _, name = principal.partition(":")
    pw = None
    with contextlib.suppress(KeyError, ValueError):
        pw = pwd.getpwnam(name) if kind == "user" else (
            pwd.getpwuid(int(name)) if kind == "uid" else None)
    if pw is None:
        return [principal], kind == "node", owner
    gids = os.getgrouplist(pw.pw_name, pw.pw_gid)
    return local_identities(pw.pw_uid, gids), pw.pw_uid in (0, owner_uid), owner


def _user_name(uid: int) -> str:
    try:
        return f"user:{pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid:{uid}"

