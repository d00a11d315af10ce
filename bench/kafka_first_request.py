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

import argparse
import json
import os
import platform
import socket
import statistics
import struct
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
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
    ap = argparse.ArgumentParser(prog="python -m bench.kafka_first_request",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--tree", help="another checkout to measure in the same run (e.g. /work/main)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    # `python -m` puts the working directory first on the child's sys.path: run the supervisors
    # from elsewhere, so that PYTHONPATH=TREE, not this checkout, gives the other one's edgebus.
    os.chdir(tempfile.gettempdir())
    trees: list[tuple[str, str | None]] = [("this checkout", None)]
    if args.tree:
        trees.append((args.tree, str(Path(args.tree).resolve())))
    rows: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    for r in range(args.rounds):
        for name, tree in trees if r % 2 == 0 else trees[::-1]:  # alternate who goes first
            rows[name].append(one(tree, args.settle))
    keys = list(next(iter(rows.values()))[0])
    med = {name: {k: round(statistics.median(x[k] for x in runs), 2) for k in keys}
           for name, runs in rows.items()}
    report = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rounds": args.rounds,
              "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python "
                         f"{platform.python_version()}", "loadavg": round(os.getloadavg()[0], 2),
              "median_ms": med, "runs": rows}
    print(f"median of {args.rounds} rounds, ms (load average {report['loadavg']}):")
    print("| supervisor | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, m in med.items():
        print(f"| {name} | " + " | ".join(str(m[k]) for k in keys) + " |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kafka_first_request.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
