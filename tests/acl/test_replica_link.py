"""The same rules on the replica listener: a link is the principal `node:NAME` once its token is
accepted (the `owner` default trusts it with its own mirrors), and a rule can narrow it."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgebus import Admin, BatchReader, Producer, ReplicaLink
from edgebus.errors import AuthorizationError
from tests.replication.conftest import NODE, TOKEN, secret

pytestmark = pytest.mark.integration


def test_rules_apply_to_replica_links(make_broker: Any, tmp_path: Path) -> None:
    src = make_broker(name="src").start()
    with Admin(socket=src.socket) as a:
        for t in ("t", "blocked"):
            a.create_topic(t, 1)
    with Producer(socket=src.socket, linger_ms=0) as p:
        for t in ("t", "blocked"):
            p.send(t, b"v").get(10)
    with BatchReader(src.socket) as r:
        info = {t: r.describe(t) for t in ("t", "blocked")}
        data = {t: r.read(t, 0, 0)[0][0].data for t in ("t", "blocked")}
    tokens = secret(tmp_path / "tokens.yaml", yaml.safe_dump({NODE: TOKEN, "other": "x" * 20}))
    peer = make_broker({"replica": {"listen": "127.0.0.1:0", "tokens_file": str(tokens)},
                        "acl": {"rules": [f"deny node:{NODE} write topic:blocked",
                                          "deny node:other create topic:*"]},
                        "metrics": {"listen": "127.0.0.1:0"}},
                       name="peer").start()
    address = peer.replica_address
    with ReplicaLink(address, NODE, TOKEN) as link:
        for t in ("t", "blocked"):
            link.create_mirror(t, info[t], f"{NODE}/{t}")
        assert link.append("t", 0, info["t"].incarnation, data["t"]) == (1, 0, 1)
        with pytest.raises(AuthorizationError,
                           match=f"node:{NODE} may not write topic 'blocked': rule 'deny "
                                 f"node:{NODE} write topic:blocked'"):
            link.append("blocked", 0, info["blocked"].incarnation, data["blocked"])
        # The link is still open: the next request is answered.
        assert link.append("t", 0, info["t"].incarnation, data["t"]) == (0, 1, 1)
    with ReplicaLink(address, "other", "x" * 20) as other, \
            pytest.raises(AuthorizationError, match="node:other may not create topic 'x'"):
        other.create_mirror("x", info["t"], "other/x")
    denied = {(d["principal"], d["operation"]) for d in
              Admin(socket=peer.socket).status()["acl"]["denied"]}
    assert denied == {(f"node:{NODE}", "write"), ("node:other", "create")}
    # The metric, per principal and operation.
    with urllib.request.urlopen(f"http://127.0.0.1:{peer.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert f'edgebus_acl_denied_total{{operation="write",principal="node:{NODE}"}} 1.0' in text
