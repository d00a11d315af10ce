"""The policy language (edgebus/acl/): rule syntax, matching, deny wins, implied describe, the
default policies, the principal mapping and the `acl:` config section. No sockets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgebus.acl import Kind, Op, Policy, parse_rule
from edgebus.acl.principals import PrincipalMap
from edgebus.acl.rules import AclSyntaxError
from edgebus.config import config_from_mapping, load_config
from edgebus.errors import ConfigError

ALICE = ("user:alice", "uid:1000", "group:sensors", "gid:50")


def decide(rules: list[str], principals: tuple[str, ...], op: str, res: str,
           trusted: bool = False, default: str = "owner") -> bool:
    kind, _, name = res.partition(":")
    p = Policy([parse_rule(r) for r in rules], default)
    return p.decide(principals, Op(op), Kind(kind), name or "*", trusted).allowed


@pytest.mark.parametrize(("rule", "res", "want"), [
    ("allow user:alice read topic:orders", "topic:orders", True),
    ("allow user:alice read topic:orders", "topic:orders2", False),  # literal
    ("allow user:alice read topic:sensors.*", "topic:sensors.temp", True),  # prefix
    ("allow user:alice read topic:sensors.*", "topic:sensorsX", False),
    ("allow user:alice read topic:site-*-temp", "topic:site-3-temp", True),  # pattern
    ("allow user:alice read topic:site-*-temp", "topic:site-3-hum", False),
    ("allow user:alice read topic:room.[0-9]", "topic:room.7", True),
    ("allow user:alice read topic:*", "topic:anything", True),
    ("allow group:sensors read topic:x", "topic:x", True),  # via a group
    ("allow user:* read topic:home.%u.*", "topic:home.alice.t", True),  # %u: her own prefix
    ("allow user:* read topic:home.%u.*", "topic:home.bob.t", False),
    ("allow user:bob read topic:orders", "topic:orders", False),
    ("allow * read topic:public", "topic:public", True),
    ("allow user:alice read group:g", "topic:g", False),  # another kind
])
def test_matching(rule: str, res: str, want: bool) -> None:
    assert decide([rule], ALICE, "read", res) is want


def test_deny_wins_over_any_allow_and_over_the_owner_default() -> None:
    rules = ["allow group:sensors all topic:sensors.*", "deny user:alice write topic:sensors.*"]
    assert decide(rules, ALICE, "read", "topic:sensors.t")
    assert not decide(rules, ALICE, "write", "topic:sensors.t")
    assert not decide(rules, ALICE, "write", "topic:sensors.t", trusted=True)
    assert not decide(["deny * all topic:x", "allow user:alice all topic:x"], ALICE, "read",
                      "topic:x", default="allow")


def test_describe_is_implied_and_admin_grants_everything() -> None:
    for op in ("read", "write", "delete", "alter"):
        assert decide([f"allow user:alice {op} topic:t"], ALICE, "describe", "topic:t")
    assert not decide(["allow user:alice create topic:t"], ALICE, "describe", "topic:t")
    assert not decide(["allow user:alice describe topic:t"], ALICE, "read", "topic:t")
    admin = ["allow user:alice admin cluster"]
    assert decide(admin, ALICE, "delete", "topic:any") and decide(admin, ALICE, "status", "cluster")
    assert not decide([*admin, "deny user:alice delete topic:keep"], ALICE, "delete", "topic:keep")


@pytest.mark.parametrize(("default", "trusted", "want"), [
    ("owner", True, True), ("owner", False, False), ("allow", False, True), ("deny", True, False),
])
def test_default_policies(default: str, trusted: bool, want: bool) -> None:
    assert decide([], ALICE, "write", "topic:t", trusted, default) is want


@pytest.mark.parametrize(("line", "says"), [
    ("allow user:alice read", "EFFECT PRINCIPAL OPERATIONS RESOURCE"),
    ("permit user:alice read topic:x", "starts with allow or deny"),
    ("allow alice read topic:x", "KIND:NAME"),
    ("allow user:alice fly topic:x", "unknown operation 'fly'"),
    ("allow user:alice write group:g", "a group has no operation 'write'"),
    ("allow user:alice admin topic:x", "a topic has no operation 'admin'"),
    ("allow user:alice read queue:x", "topic:NAME, group:NAME or cluster"),
    ("allow user:alice status cluster:main", "the cluster has no name"),
    ("allow user:alice read topic:a b", "EFFECT PRINCIPAL OPERATIONS RESOURCE"),
])
def test_syntax_errors_say_what_is_wrong(line: str, says: str) -> None:
    with pytest.raises(AclSyntaxError, match=None) as e:
        parse_rule(line)
    assert says in str(e.value)


def test_rule_text_round_trips() -> None:
    for line in ("allow user:alice read,write topic:sensors.*", "deny group:g all group:x*",
                 "allow node:gw-7 status cluster", "allow * describe topic:home.%u.*"):
        assert parse_rule(parse_rule(line).text()) == parse_rule(line)


def test_principal_mapping_adds_principals() -> None:
    m = PrincipalMap.parse({"sasl:*": "user:%u", "cert:gw7.example.com": ["node:gateway-7"],
                            "user:vendor-*": "group:vendors"})
    assert m.apply(["sasl:alice"]) == ("sasl:alice", "user:alice")
    assert m.apply(["cert:gw7.example.com"]) == ("cert:gw7.example.com", "node:gateway-7")
    assert m.apply(["user:vendor-a", "uid:7"]) == ("user:vendor-a", "uid:7", "group:vendors")
    with pytest.raises(AclSyntaxError):
        PrincipalMap.parse({"sasl:*": "user:*"})  # a mapping names one principal, no wildcard


def test_config_section_and_rules_file(tmp_path: Path) -> None:
    f = tmp_path / "acl.yaml"
    f.write_text("rules:\n  - allow user:bob read topic:b\nprincipals:\n  'sasl:*': 'user:%u'\n")
    os.chmod(f, 0o644)
    src = tmp_path / "edgebus.yaml"
    cfg = config_from_mapping({"acl": {"default": "deny", "file": "acl.yaml",
                                       "rules": ["allow user:alice read topic:a"]}}, source=src)
    p = cfg.acl.policy()
    assert [r.text() for r in p.rules] == ["allow user:alice read topic:a",
                                           "allow user:bob read topic:b"]
    assert p.default == "deny" and p.principals.apply(["sasl:bob"])[-1] == "user:bob"
    os.chmod(f, 0o666)  # anyone could grant themselves everything: refused
    with pytest.raises(ConfigError, match=r"acl.file: .* may be written by its group or others"):
        config_from_mapping({"acl": {"file": "acl.yaml"}}, source=src)


@pytest.mark.parametrize(("acl", "key"), [
    ({"rules": ["allow user:a read topic:x", "allow user:a rd topic:x"]}, "acl.rules[1]"),
    ({"default": "maybe"}, "acl.default"),
    ({"rulez": []}, "acl.rulez"),
    ({"enabled": "yes"}, "acl.enabled"),
])
def test_config_errors_name_the_key(acl: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        config_from_mapping({"acl": acl})


def test_shipped_config_gives_the_bridges_exactly_what_they_need() -> None:
    """systemd/edgebus.yaml: the bridge units' users (User=edgebus-%i) get their rights, no more."""
    root = Path(__file__).resolve().parents[2]
    p = load_config(root / "systemd" / "edgebus.yaml").acl.policy()

    def may(user: str, op: str, res: str) -> bool:
        kind, _, name = res.partition(":")
        return p.decide((f"user:{user}", f"group:{user}", "group:edgebus"), Op(op), Kind(kind),
                        name or "*", False).allowed

    mqtt, repl = "edgebus-mqtt", "edgebus-replicate"
    for res in ("topic:sensors.temperature", "topic:meters", "topic:device.logs",
                "topic:mqtt.dead-letter"):
        assert may(mqtt, "write", res) and may(mqtt, "describe", res) and not may(mqtt, "read", res)
    assert may(mqtt, "read", "topic:device.commands") and not may(mqtt, "write", "topic:device.commands")
    assert may(mqtt, "read", "group:edgebus-mqtt-bridge") and not may(mqtt, "read", "group:other")
    assert may(repl, "read", "topic:anything") and may(repl, "describe", "group:any")
    assert not may(repl, "write", "topic:anything") and not may(repl, "read", "group:any")
    for who in (mqtt, repl):
        for op, res in (("create", "topic:x"), ("delete", "topic:sensors.temperature"),
                        ("alter", "topic:meters"), ("status", "cluster"), ("delete", "group:g")):
            assert not may(who, op, res), (who, op, res)
    unit = (root / "systemd" / "edgebus-bridge@.service").read_text()
    assert "\nUser=edgebus-%i\n" in unit
    sysusers = (root / "systemd" / "edgebus.sysusers.conf").read_text()
    assert "u edgebus-mqtt " in sysusers and "u edgebus-replicate " in sysusers


def test_the_teapot_example_in_security_md_decides_as_it_says() -> None:
    import yaml

    text = (Path(__file__).resolve().parents[2] / "docs" / "SECURITY.md").read_text()
    block = text.split("## Example: the teapot deployment", 1)[1].split("```yaml\n", 1)[1]
    cfg = config_from_mapping(yaml.safe_load(block.split("```", 1)[0]))
    p = cfg.acl.policy()

    def may(who: tuple[str, ...], op: str, res: str) -> bool:
        kind, _, name = res.partition(":")
        return p.decide(who, Op(op), Kind(kind), name or "*", False).allowed

    bridge, app, ops = ("user:edgebus-mqtt",), ("user:teapot-app",), ("user:olga", "group:teapot-ops")
    assert may(bridge, "write", "topic:teapot.temperature")
    assert may(bridge, "read", "topic:teapot.commands") and may(bridge, "read", "group:teapot-bridge")
    assert not may(bridge, "write", "topic:teapot.commands")
    assert may(app, "read", "topic:teapot.temperature") and may(app, "read", "group:boil-detector")
    assert may(app, "write", "topic:teapot.commands")
    assert not may(app, "write", "topic:teapot.temperature")  # as the doc's `acl check` says
    assert may(ops, "describe", "topic:teapot.temperature") and may(ops, "status", "cluster")
    assert not may(ops, "write", "topic:teapot.commands") and not may(ops, "read", "topic:teapot.commands")
