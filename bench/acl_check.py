"""CPU per access check in the supervisor, on a noisy machine the steadier figure beside
`python -m bench --acl` (whose on/off throughput ratio other work on the machine moves a lot).

    python -m bench.acl_check [--rounds 5]

Times, best of `rounds` in CPU time per call: the dispatcher's check of a PRODUCE whose decision
the connection has cached (every request after a connection's first to a topic), with the ten
rules of `bench.run.ACL_RULES`; the same when no rule concerns the connection (the `owner`
default's shortcut); and an uncached decision (a connection's first request to a resource). The
connection is a real Unix socket (SO_PEERCRED, SO_PEERGROUPS read at its first check).
"""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.micro import cpu_per_call
from bench.run import ACL_RULES
from edgebus.acl import Policy, parse_rule
from edgebus.server.acl import Authorizer
from edgebus.server.acl.checks import TOPIC_WRITE

RESULTS = Path(__file__).resolve().parent / "results"


def conn(sock: socket.socket) -> Any:
    # What Authorizer reads of a server Connection (edgebus/server/listeners/stream.py).
    return SimpleNamespace(acl=None, node=None, uid=0, pid=0, peer_name=None, sock=sock)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    a, b = socket.socketpair(socket.AF_UNIX)
    ten = Authorizer(Policy([parse_rule(r) for r in ACL_RULES]))
    none = Authorizer(Policy())
    c_ten, c_none = conn(a), conn(a)
    ten.check(c_ten, TOPIC_WRITE, "bench-topic")
    none.check(c_none, TOPIC_WRITE, "bench-topic")
    fresh = conn(a)

    def uncached() -> None:
        fresh.acl.cache[TOPIC_WRITE].clear()
        ten.check(fresh, TOPIC_WRITE, "bench-topic")

    ten.check(fresh, TOPIC_WRITE, "bench-topic")
    rows = {
        "cached decision, 10 rules": cpu_per_call(
            lambda: ten.check(c_ten, TOPIC_WRITE, "bench-topic"), args.rounds),
        "no rule concerns the connection (owner shortcut)": cpu_per_call(
            lambda: none.check(c_none, TOPIC_WRITE, "bench-topic"), args.rounds),
        "uncached decision, 10 rules": cpu_per_call(uncached, args.rounds),
    }
    a.close()
    b.close()
    for name, us in rows.items():
        print(f"{name:50s} {us:8.3f} us per check")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "acl_check.json").write_text(json.dumps(
        {k: round(v, 4) for k, v in rows.items()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
