"""The supervisor's entry point, `Authorizer.authorize(who, op, resource)`, as another listener
(the Kafka protocol, an HTTP API) calls it with a Subject: decisions, the typed error, denial
counts, the once-a-minute log line, and a new policy taking effect at once."""

from __future__ import annotations

import logging
import os

import pytest

from edgebus.acl import Policy, parse_rule
from edgebus.errors import AuthorizationError
from edgebus.server.acl import Authorizer, Subject


def policy(*rules: str, default: str = "owner") -> Policy:
    return Policy([parse_rule(r) for r in rules], default)


def test_subjects_are_decided_and_denials_counted_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    a = Authorizer(policy("allow sasl:alice write topic:orders"))
    alice, bob = Subject(("sasl:alice",)), Subject(("sasl:bob",))
    a.authorize(alice, "write", "topic:orders")
    a.authorize(Subject.local(os.geteuid()), "delete", "topic:anything")  # the owner default
    with caplog.at_level(logging.WARNING, logger="edgebus.acl"):
        for _ in range(3):
            with pytest.raises(AuthorizationError) as e:
                a.authorize(bob, "write", "topic:orders")
    assert e.value.operation == "write" and e.value.resource == "topic:orders"
    assert str(e.value).startswith("sasl:bob may not write topic 'orders': no rule allows it")
    assert a.stats()["denied"] == [{"principal": "sasl:bob", "operation": "write", "count": 3}]
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("edgebus.")]
    assert len(lines) == 1 and "denied: sasl:bob may not write topic 'orders'" in lines[0]
    with pytest.raises(AuthorizationError, match="may not status the cluster"):
        a.authorize(bob, "status", "cluster")


def test_a_new_policy_applies_to_the_next_check_of_a_cached_subject() -> None:
    a = Authorizer(policy("allow * read topic:t"))
    s = Subject(("user:nobody-here",))
    a.authorize(s, "read", "topic:t")
    a.set_policy(policy("deny * read topic:t"))
    with pytest.raises(AuthorizationError, match="rule 'deny \\* read topic:t'"):
        a.authorize(s, "read", "topic:t")
    assert a.stats()["reloads"] == 1


def test_the_principal_mapping_applies_to_subjects() -> None:
    from edgebus.acl.principals import PrincipalMap

    p = Policy([parse_rule("allow user:carol read topic:x")], "owner",
               PrincipalMap.parse({"sasl:*": "user:%u"}))
    a = Authorizer(p)
    a.authorize(Subject(("sasl:carol",)), "read", "topic:x")
    with pytest.raises(AuthorizationError):
        a.authorize(Subject(("sasl:dave",)), "read", "topic:x")
