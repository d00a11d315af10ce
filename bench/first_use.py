"""What making parts at their first use costs that first request (issue 16, round 3).

    python -m bench.first_use [--tree OTHER_CHECKOUT] [--rounds 5]

The supervisor makes the transaction coordinator and its native handlers at the first
INIT_PRODUCER_ID (or batch with a producer id, or Kafka connection), and the replica handlers at a
link's first request (edgebus/server/lazy.py). Per round, a fresh supervisor (EmbeddedBroker,
with a replica listener on a free port and a token file) is left to settle, then this times:
an idempotent Producer's start (connect, API versions, INIT_PRODUCER_ID: the first one after the
start, then a second producer), a plain Producer's start (no producer id: the baseline of the
same connect), and a replica link's start (TCP connect and REPLICA_HELLO: the first, then a
second link). With --tree, another checkout's supervisor (PYTHONPATH=TREE, e.g. main, which makes
these at start) is measured in the same run, rounds alternated. Medians, milliseconds. Writes
bench/results/first_use.json.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import tree_rounds

NODE, TOKEN = "bench-src", "b" * 24


def _ms(fn: Callable[[], Any]) -> float:
    """Milliseconds `fn` (a client's constructor: connect and its first requests) takes."""
    t0 = time.perf_counter()
    obj = fn()
    dt = 1000 * (time.perf_counter() - t0)
    obj.close()
    return dt


def one(tree: str | None, settle_s: float, work: Path) -> dict[str, float]:
    from edgebus import Producer
    from edgebus.client.replica import ReplicaLink
    from edgebus.testing import EmbeddedBroker

    tokens = work / "tokens.yaml"
    tokens.write_text(f"{NODE}: {TOKEN}\n")
    tokens.chmod(0o600)
    broker = EmbeddedBroker(log_level="WARNING", config={
        "replica": {"listen": "127.0.0.1:0", "node": "bench-dst", "tokens_file": str(tokens)}})
    broker.start(env={"PYTHONPATH": tree} if tree else None)
    try:
        address = broker.replica_address
        time.sleep(settle_s)
        sock = broker.socket
        plain = _ms(lambda: Producer(socket=sock, transport="socket"))
        first_idem = _ms(lambda: Producer(socket=sock, transport="socket", enable_idempotence=True))
        second_idem = _ms(lambda: Producer(socket=sock, transport="socket",
                                           enable_idempotence=True))
        first_link = _ms(lambda: ReplicaLink(address, NODE, TOKEN, timeout=10))
        second_link = _ms(lambda: ReplicaLink(address, NODE, TOKEN, timeout=10))
        return {"plain_producer_ms": plain, "first_idempotent_producer_ms": first_idem,
                "second_idempotent_producer_ms": second_idem, "first_replica_link_ms": first_link,
                "second_replica_link_ms": second_link}
    finally:
        broker.stop()
        broker.cleanup()


def main(argv: list[str] | None = None) -> int:
    with tempfile.TemporaryDirectory() as work:
        return tree_rounds.main(argv, "python -m bench.first_use", __doc__, "first_use.json",
                                lambda tree, settle_s: one(tree, settle_s, Path(work)))


if __name__ == "__main__":
    raise SystemExit(main())
