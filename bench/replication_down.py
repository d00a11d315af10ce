"""A peer link's down direction (peer_pull.py): how late a record produced at the peer reaches
this node's mirror, and what an idle link costs the peer and the replicator.

    python -m bench.replication_down [--base DIR] [--seconds 6] [--idle 10] [--rounds 2]
                                     [--linger MS]

Real processes: the peer supervisor (node office, a topic `office.cmd` its producer writes), this
node's supervisor, `edgebus replicate` with a down link (default heartbeat, 5 s) that mirrors the
topic into `cmd`. Measured per run:
- lag at a paced 100/s and 1,000/s (`send()`, linger_ms=0, 100 B values carrying their send
  time): a consumer of the local mirror records receive minus send; p50/p99 (the first 10 % cut);
- idle: the link with nothing to bring down for --idle seconds: the requests the peer served on
  its replica connections (its own count, status "clients") per second, and the CPU of the
  replicator and of the peer supervisor (the Admin asking for the count is one request a run).
With --base DIR (a tree of the old code, e.g. `git archive main | tar -x -C DIR`), the replicator
runs from DIR and from this tree in turn, --rounds times (A/B alternated in one session: the
machine is shared, so compare the ratio within one run). Writes bench/results/replication-down.json.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from bench.replication_harness import RESULTS, cpu, kill, paced, quantiles, write_report
from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.testing import EmbeddedBroker, free_port

NODE, PEER = "bench-here", "bench-office"
TOKEN, PEER_TOKEN = "bench-token-0123456789", "bench-peer-token-0123456789"
_TS = struct.Struct("<q")
HERE = Path(__file__).resolve().parent.parent


def _secret(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


class Setup:
    """The two supervisors and the replicator (from `tree`: this one or the old code's)."""

    def __init__(self, root: Path, tree: Path, linger_ms: int = 0) -> None:
        root.mkdir(parents=True, exist_ok=True)
        pport, lport = free_port(), free_port()
        self.peer = EmbeddedBroker(root / "peer", config={
            "replica": {"listen": f"127.0.0.1:{pport}", "node": PEER, "tokens_file": str(
                _secret(root / "peer-tokens.yaml", yaml.safe_dump({NODE: TOKEN})))},
            "acl": {"rules": [f"allow node:{NODE} read topic:office.*"]}}).start()
        self.local = EmbeddedBroker(root / "local", config={
            "replica": {"listen": f"127.0.0.1:{lport}", "node": NODE, "tokens_file": str(
                _secret(root / "local-tokens.yaml", yaml.safe_dump({PEER: PEER_TOKEN})))}}
        ).start()
        with Admin(socket=self.peer.socket) as a:
            a.create_topic("office.cmd", 1)
        cfg = root / "replicator.yaml"
        cfg.write_text(yaml.safe_dump({"node": NODE, "source": {"socket": self.local.socket},
                                       "links": [{
                                           "name": "bench", "target": "peer",
                                           "address": f"127.0.0.1:{pport}",
                                           "token_file": str(_secret(root / "tok", TOKEN)),
                                           "local_replica": {
                                               "address": f"127.0.0.1:{lport}",
                                               "token_file": str(_secret(root / "ltok",
                                                                         PEER_TOKEN))},
                                           "linger_ms": linger_ms,
                                           "topics": [{"pattern": "cmd", "direction": "down",
                                                       "remote": "office.cmd"}]}]}))
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.rep = subprocess.Popen(
            [sys.executable, "-m", "edgebus.cli.main", "replicate", "--config", str(cfg)],
            cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while self.end() < 0:  # the mirror exists: the link is up
            if time.monotonic() > deadline:
                raise RuntimeError("the down link did not come up")
            time.sleep(0.02)

    def end(self) -> int:
        try:
            with Admin(socket=self.local.socket, transport="socket") as a:
                return sum(p.log_end_offset for p in a.describe_topic("cmd").partitions)
        except Exception:
            return -1

    def peer_requests(self) -> int:
        """Requests the peer served on its replica (TCP) connections, by its own count."""
        with Admin(socket=self.peer.socket) as a:
            return sum(c["requests"] for c in a.status()["clients"] if c["pid"] == -1)

    def close(self) -> None:
        kill(self.rep)
        self.peer.cleanup()
        self.local.cleanup()


def lag(s: Setup, rate: int, seconds: float) -> dict[str, Any]:
    n = int(rate * seconds)
    got: list[float] = []
    start = s.end()

    def consume() -> None:
        with Consumer(socket=s.local.socket, auto_offset_reset="earliest") as c:
            tp = TopicPartition("cmd", 0)
            c.assign([tp])
            c.seek(tp, start)
            deadline = time.monotonic() + seconds + 30
            while len(got) < n and time.monotonic() < deadline:
                for recs in c.poll(timeout_ms=200).values():
                    now = time.monotonic_ns()
                    # every record here carries its stamp (no null value)
                    got.extend((now - _TS.unpack_from(r.value)[0]) / 1e6 for r in recs
                               if r.value is not None)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    time.sleep(0.3)  # the consumer is polling before the first send
    pids = {"replicator": s.rep.pid, "peer": s.peer.pid or 0, "local": s.local.pid or 0}
    cpu0 = {k: cpu(pid) for k, pid in pids.items()}
    pad = b"x" * (100 - _TS.size)
    with Producer(socket=s.peer.socket, linger_ms=0) as p:
        paced(n, rate, lambda i: p.send("office.cmd", _TS.pack(time.monotonic_ns()) + pad,
                                        partition=0))
        p.flush()
    t.join(seconds + 40)
    q = quantiles(got)
    return {"rate": rate, "sent": n, "received": len(got), "lag_p50_ms": q[49],
            "lag_p99_ms": q[98],
            "cpu_us_per_record": {k: (cpu(pid) - cpu0[k]) / n * 1e6 for k, pid in pids.items()}}


def idle(s: Setup, seconds: float) -> dict[str, Any]:
    time.sleep(1.0)  # the last shipment's reads are over
    peer = s.peer.pid or 0
    r0, c0, p0, t0 = s.peer_requests(), cpu(s.rep.pid), cpu(peer), time.monotonic()
    time.sleep(seconds)
    secs = time.monotonic() - t0
    return {"seconds": round(secs, 2),
            "peer_requests_per_s": (s.peer_requests() - r0) / secs,
            "replicator_cpu_percent": 100 * (cpu(s.rep.pid) - c0) / secs,
            "peer_cpu_percent": 100 * (cpu(peer) - p0) / secs}


def run_one(root: Path, tree: Path, seconds: float, idle_s: float,
            linger_ms: int = 0) -> dict[str, Any]:
    s = Setup(root, tree, linger_ms)
    try:
        out: dict[str, Any] = {"idle": idle(s, idle_s)}
        for rate in (100, 1000):
            out[f"rate_{rate}"] = lag(s, rate, seconds)
        return out
    finally:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=Path, help="a tree of the old code, run in turn with this one")
    ap.add_argument("--seconds", type=float, default=6.0, help="seconds of sending per rate")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of the idle link")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--linger", type=int, default=0,
                    help="the link's linger_ms (the old down direction ignores it)")
    ap.add_argument("--out", default=str(RESULTS / "replication-down.json"))
    args = ap.parse_args()
    load = os.getloadavg()
    trees = {"this": HERE} if args.base is None else {"base": args.base.resolve(), "this": HERE}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-down-") as tmp:
        for rnd in range(args.rounds):
            for name, tree in trees.items():
                r = run_one(Path(tmp) / f"{rnd}-{name}", tree, args.seconds, args.idle,
                            args.linger)
                runs.append({"tree": name, "round": rnd, **r})
                lags = "  ".join(f"{k[5:]}/s p50 {v['lag_p50_ms']:.1f} ms p99 "
                                 f"{v['lag_p99_ms']:.1f} ms ({v['received']}/{v['sent']})"
                                 for k, v in r.items() if k.startswith("rate_"))
                print(f"{name:5} round {rnd}: idle {r['idle']['peer_requests_per_s']:.2f} req/s "
                      f"at the peer, CPU replicator {r['idle']['replicator_cpu_percent']:.2f} % "
                      f"peer {r['idle']['peer_cpu_percent']:.2f} %; "
                      f"{lags}", flush=True)
    write_report(args.out, load, command=" ".join(sys.argv), seconds=args.seconds,
                 idle_seconds=args.idle, runs=runs)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
