"""What loading the Kafka protocol at the first Kafka connection costs that connection (issue 16).

    python -m bench.kafka_first_request [--tree OTHER_CHECKOUT] [--rounds 5]

Starts a supervisor (edgebus.testing.EmbeddedBroker: Kafka listener on a free port, defaults),
waits until it is idle, then times an ApiVersions v0 request on a new TCP connection (connect,
send, whole answer read): the first one, a second one on the same connection, and the first on a
second connection. This checkout's supervisor loads kio and the handler modules during the first
(edgebus/server/kafka/front.py); with --tree, a supervisor of another checkout (PYTHONPATH=TREE,
e.g. main, which loads them at start) is measured in the same run, rounds alternated. Medians,
milliseconds. Writes bench/results/kafka_first_request.json.
"""

from __future__ import annotations

import socket
import struct
import time

from bench import tree_rounds

CLIENT_ID = b"bench"


def _api_versions(s: socket.socket, corr: int) -> float:
    """One ApiVersions v0 request and its whole answer: milliseconds."""
    body = struct.pack(">hhih", 18, 0, corr, len(CLIENT_ID)) + CLIENT_ID
    t0 = time.perf_counter()
    s.sendall(struct.pack(">i", len(body)) + body)
    head = b""
    while len(head) < 4:
        head += s.recv(4 - len(head))
    n = struct.unpack(">i", head)[0]
    got = 0
    while got < n:
        got += len(s.recv(n - got))
    return 1000 * (time.perf_counter() - t0)


def one(tree: str | None, settle_s: float) -> dict[str, float]:
    from edgebus.testing import EmbeddedBroker

    broker = EmbeddedBroker(log_level="WARNING")
    broker.start(env={"PYTHONPATH": tree} if tree else None)
    try:
        host, port = broker.kafka_bootstrap.rsplit(":", 1)
        time.sleep(settle_s)
        t0 = time.perf_counter()
        with socket.create_connection((host, int(port))) as s:
            first_total = 1000 * (time.perf_counter() - t0)
            first = _api_versions(s, 1)
            first_total += first
            again = _api_versions(s, 2)
        with socket.create_connection((host, int(port))) as s:
            second_conn = _api_versions(s, 1)
        return {"first_request_ms": first, "first_connect_and_request_ms": first_total,
                "same_connection_next_ms": again, "second_connection_first_ms": second_conn}
    finally:
        broker.stop()
        broker.cleanup()


def main(argv: list[str] | None = None) -> int:
    return tree_rounds.main(argv, "python -m bench.kafka_first_request", __doc__,
                            "kafka_first_request.json", one)


if __name__ == "__main__":
    raise SystemExit(main())
