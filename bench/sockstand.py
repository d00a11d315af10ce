"""Standing fetches on the Unix socket (issue 16), on and off in the same run: what the
supervisor does per message for one producer `send()` (linger_ms=0) -> one socket consumer at a
paced rate, counted rather than only timed, because CPU time on a loaded shared machine moves by
30-50 % between identical runs while counts do not:

- the supervisor's context switches per message (voluntary: each time its loop blocked in
  epoll and was woken; the "wake-up per answer" a fetch per answer costs),
- the requests the consumer's connection sent per message (from `edgebus status`, sampled
  every 50 ms during the case: a slight undercount, the last 50 ms at most),
- the supervisor's CPU per message (/proc/PID/task/*/schedstat, ns, all threads) and p50/p99.

    python -m bench.sockstand [--rates 1000,10000] [--rounds 3] [--duration 4]
                              [--out bench/results/issue16-sockstand-counts.md]

"on" and "off" are the same code with the client's switch (EDGEBUS_SHM_STANDING_FETCH, read by
the forked clients from `edgebus.client.shm_sync_channel.STANDING`), alternated in every round.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench import peers
from bench import run as R


def _sched_ns(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total


def _switches(pid: int) -> tuple[int, int]:
    c = psutil.Process(pid).num_ctx_switches()
    return c.voluntary, c.involuntary


class _Requests(threading.Thread):
    """Samples `edgebus status` every 50 ms during a case: each connection's request count (it
    only grows while the connection lives), and whether it was ever seen with a parked fetch
    (the consumer's: at 10,000/s with one fetch per answer it is parked in few samples)."""

    def __init__(self, broker: Any) -> None:
        super().__init__(daemon=True)
        self.broker = broker
        self.stop = threading.Event()
        self.seen: dict[int, int] = {}
        self.parked: set[int] = set()

    def run(self) -> None:
        from edgebus import Admin

        with Admin(socket=self.broker.socket, transport="socket") as a:
            while not self.stop.wait(0.05):
                for c in a.status()["clients"]:
                    self.seen[c["id"]] = max(self.seen.get(c["id"], 0), int(c["requests"]))
                    if c["parked_fetches"]:
                        self.parked.add(c["id"])

    @property
    def consumer_requests(self) -> int:
        return sum(n for i, n in self.seen.items() if i in self.parked)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.sockstand", description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="1000,10000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    from edgebus import tuning
    from edgebus.client import shm_sync_channel
    from edgebus.testing import EmbeddedBroker

    broker = EmbeddedBroker(log_level="WARNING").start()
    pid = broker.pid
    assert pid is not None
    adapter = peers.Edgebus("socket", "send", broker)
    rows: list[dict[str, Any]] = []
    load0 = os.getloadavg()
    try:
        for rnd in range(a.rounds):
            for rate in (int(r) for r in a.rates.split(",")):
                R.RATE = rate
                order = ["on", "off"] if rnd % 2 == 0 else ["off", "on"]
                for variant in order:
                    shm_sync_channel.STANDING = tuning.STANDING and variant == "on"
                    sampler = _Requests(broker)
                    sampler.start()
                    v0, i0 = _switches(pid)
                    ns0 = _sched_ns(pid)
                    row = R.run_case(adapter, "edgebus-socket", "send", 100, 1, 1, True,
                                     a.duration, None)
                    ns1 = _sched_ns(pid)
                    v1, i1 = _switches(pid)
                    sampler.stop.set()
                    sampler.join(5)
                    n = max(row["sent"], 1)
                    reqs = sampler.consumer_requests
                    row.update(round=rnd, variant=variant, rate=rate,
                               sup_us=round((ns1 - ns0) / n / 1000, 1),
                               vol=round((v1 - v0) / n, 3), invol=round((i1 - i0) / n, 3),
                               reqs=round(reqs / n, 3))
                    rows.append(row)
                    print(f"  round {rnd} {rate:6}/s standing {variant:3}  supervisor "
                          f"{row['sup_us']} us/msg, {row['vol']} voluntary + {row['invol']} "
                          f"involuntary switches/msg, consumer requests/msg {row['reqs']}, "
                          f"p50 {row.get('p50_us')} p99 {row.get('p99_us')} us", flush=True)
    finally:
        broker.cleanup()
    load1 = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    lines = [f"# issue 16: standing fetches on the socket, counted, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}",
             "", f"`python -m bench.sockstand --rates {a.rates} --rounds {a.rounds} "
             f"--duration {a.duration}` at commit {commit}", "",
             f"{os.cpu_count()} CPUs, load average {load0[0]:.2f} before / {load1[0]:.2f} after "
             "(a shared machine: CPU and latency are noisy, counts much less so).", "",
             "| round | rate | standing | supervisor us/msg | voluntary switches/msg | "
             "involuntary/msg | consumer requests/msg | p50 us | p99 us | sent |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['round']} | {r['rate']} | {r['variant']} | {r['sup_us']} | {r['vol']} | "
                     f"{r['invol']} | {r['reqs']} | {r.get('p50_us')} | {r.get('p99_us')} | "
                     f"{r['sent']} |")
    lines += ["", "| rate | standing | median supervisor us/msg | median voluntary switches/msg | "
              "median requests/msg | median p50 us | median p99 us |", "|---|---|---|---|---|---|---|"]
    for rate in sorted({r["rate"] for r in rows}):
        for variant in ("on", "off"):
            sel = [r for r in rows if r["rate"] == rate and r["variant"] == variant]
            if not sel:
                continue

            def med(k: str, sel: list[dict[str, Any]] = sel) -> float:
                return round(statistics.median(float(r.get(k) or 0) for r in sel), 3)

            lines.append(f"| {rate} | {variant} | {med('sup_us')} | {med('vol')} | {med('reqs')} | "
                         f"{med('p50_us')} | {med('p99_us')} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
