"""CPU per access check in the supervisor, on a noisy machine the steadier figure beside
`python -m bench --acl` (whose on/off throughput ratio other work on the machine moves a lot).

    python -m bench.acl_check [--rounds 5]

Times, best of `rounds` in CPU time per call: the dispatcher's check of a PRODUCE whose decision
the connection has cached (every request after a connection's first to a topic), with the ten
rules of `bench.run.ACL_RULES`; the same when no rule concerns the connection (the `owner`
default's shortcut); and an uncached decision (a connection's first request to a resource). The
connection is a real Unix socket (SO_PEERCRED, SO_PEERGROUPS read at its first check).

Then what the supervisor pays per request, which is what the on/off rows of `python -m bench
--acl` see: a PRODUCE through `Dispatcher.dispatch_frame`'s fast path and a FETCH's check, with
the ten rules against access control off (the handler behind is a no-op, so that the
difference is all the check's); the two are timed alternately, `rounds` times, best of each.
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
from edgebus.server.acl.checks import TOPIC_READ, TOPIC_WRITE, build_checks

RESULTS = Path(__file__).resolve().parent / "results"


def conn(sock: socket.socket) -> Any:
    # What Authorizer reads of a server Connection (edgebus/server/listeners/stream.py).
    return SimpleNamespace(acl=None, node=None, uid=0, pid=0, peer_name=None, sock=sock)


def per_request(ten: Authorizer, sock: socket.socket, rounds: int) -> dict[str, float]:
    """PRODUCE dispatched on the fast path, and a FETCH's check, ACL on (10 rules) and off."""
    import logging

    import edgebus.server.dispatch as dispatch_mod
    from edgebus.protocol import messages as M

    logging.disable(logging.WARNING)
    fields = ("bench-topic", 0, 1, memoryview(b"x"))
    real_decode = dispatch_mod.decode_produce
    dispatch_mod.decode_produce = lambda body: fields  # the body's decoding is the same either way
    try:
        def produce(conn: Any, corr: int, *rest: Any) -> Any:
            return dispatch_mod.NO_RESPONSE

        loop = SimpleNamespace(queue_answer=lambda *x: None)
        off = dispatch_mod.Dispatcher(loop, {}, produce, None)  # type: ignore[arg-type]
        on = dispatch_mod.Dispatcher(loop, {}, produce, ten)  # type: ignore[arg-type]
        c_off, c_on = conn(sock), conn(sock)
        for c in (c_off, c_on):
            c.requests, c.allowed = 0, None
        key = int(M.Api.PRODUCE)
        on.dispatch_frame(c_on, key, 0, 1, memoryview(b""))  # the first: decided and cached
        fetch_check = build_checks(ten)[int(M.Api.FETCH)]
        req = SimpleNamespace(partitions=[SimpleNamespace(topic="bench-topic", partition=0)])
        ten.check(c_on, TOPIC_READ, "bench-topic")
        best = {"p_off": float("inf"), "p_on": float("inf"), "f_on": float("inf")}
        for _ in range(rounds):  # alternated, so that a busy moment touches both
            best["p_off"] = min(best["p_off"], cpu_per_call(
                lambda: off.dispatch_frame(c_off, key, 0, 1, memoryview(b"")), 1))
            best["p_on"] = min(best["p_on"], cpu_per_call(
                lambda: on.dispatch_frame(c_on, key, 0, 1, memoryview(b"")), 1))
            best["f_on"] = min(best["f_on"], cpu_per_call(lambda: fetch_check(c_on, req), 1))
    finally:
        dispatch_mod.decode_produce = real_decode
        logging.disable(logging.NOTSET)
    return {
        "PRODUCE dispatch (fast path), ACL off": best["p_off"],
        "PRODUCE dispatch (fast path), 10 rules": best["p_on"],
        "PRODUCE: what the ACL adds per request": best["p_on"] - best["p_off"],
        "FETCH check, 10 rules, cached (all of its cost)": best["f_on"],
    }


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
    rows.update(per_request(ten, a, args.rounds))
    a.close()
    b.close()
    for name, us in rows.items():
        print(f"{name:60s} {us:8.3f} us")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "acl_check.json").write_text(json.dumps(
        {k: round(v, 4) for k, v in rows.items()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
