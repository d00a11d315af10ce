"""Access control's cost as the supervisor's CPU for a fixed amount of work: on a shared machine
the on/off throughput ratio of `python -m bench --acl` moves by more than the 3 % it is meant to
show (its A/A control, two identical supervisors, differs by 10-20 %); CPU seconds for the same
records, produced and then consumed with nothing running beside them, move less. (Hardware
instruction counters would be steadier still, but virtual machines like the development one do
not expose them to perf.)

    python -m bench.acl_cpu [--records 200000] [--rounds 7]

Two supervisors, access control off and on (the ten rules of `bench.run.ACL_RULES`, one of which
concerns the benchmark's own user, so its requests take the cached-decision path). For each
round, transport (socket, shm) and API (`send_batch` of 1,000, `send` with linger 0),
alternating which supervisor goes first: produce `records` 100-byte records (5x for batches), then
consume them all, and count the supervisor's CPU time for it (the scheduler's nanosecond
accounting of all its threads, not the 10 ms user/system ticks). Reports CPU microseconds per
message and the on/off ratio of the medians, and the spread of the ratios of
single rounds (each round's on and off ran back to back).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.run import ACL_RULES

RESULTS = Path(__file__).resolve().parent / "results"
PAYLOAD = b"x" * 100


def _cpu_ns(pid: int) -> int:
    """CPU nanoseconds the process's threads have run, from the scheduler's own accounting
    (/proc/PID/task/*/schedstat): user+system times tick at 10 ms, which at 0.2 us per record is
    a 5 % step for a whole count; the scheduler's clock is in nanoseconds."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        # A thread may end between the listing and the read.
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


def _counted(pid: int, work: Any) -> dict[str, float]:
    """Run work(); the supervisor's CPU seconds it took (all its threads)."""
    t0 = _cpu_ns(pid)
    work()
    return {"cpu": (_cpu_ns(pid) - t0) / 1e9}


def _one(broker: Any, transport: str, api: str, records: int, n: int) -> dict[str, float]:
    from edgebus import Admin, Consumer, Producer, TopicPartition

    topic = f"acl-cpu-{n}"
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(topic, 1)

    def work() -> None:
        kw: dict[str, Any] = {"linger_ms": 0} if api == "send" else {}
        with Producer(socket=broker.socket, transport=transport, **kw) as p:
            if api == "send":
                for _ in range(records):
                    p.send(topic, PAYLOAD, partition=0)
            else:
                for i in range(0, records, 1000):
                    p.send_batch(topic, [PAYLOAD] * min(1000, records - i), partition=0)
            p.flush()
        with Consumer(socket=broker.socket, transport=transport, enable_auto_commit=False,
                      auto_offset_reset="earliest") as c:
            c.assign([TopicPartition(topic, 0)])
            got = 0
            deadline = time.monotonic() + 120
            while got < records and time.monotonic() < deadline:
                got += sum(len(r) for r in c.poll(500).values())
        if got != records:
            raise RuntimeError(f"read {got} of {records} records")

    counts = _counted(int(broker.pid), work)
    with Admin(socket=broker.socket, transport="socket") as a:
        a.delete_topic(topic)
    return {k: v / records for k, v in counts.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--control", action="store_true",
                    help="the 'on' supervisor has access control off too (an A/A run: its ratios "
                         "are the noise floor)")
    ap.add_argument("--out", default=str(RESULTS / "acl-cpu.json"))
    args = ap.parse_args(argv)
    from edgebus.testing import EmbeddedBroker

    off = EmbeddedBroker(log_level="WARNING", config={"acl": {"enabled": False}}).start()
    on_acl = {"enabled": False} if args.control else {"rules": ACL_RULES}
    on = EmbeddedBroker(log_level="WARNING", config={"acl": on_acl}).start()
    rows: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    n = 0
    try:
        for r in range(args.rounds):
            for transport in ("socket", "shm"):
                for api in ("batch", "send"):
                    order = [("off", off), ("on", on)] if r % 2 == 0 else [("on", on), ("off", off)]
                    for side, broker in order:
                        n += 1
                        # Batches cost the supervisor ~5x less per record: 5x the records
                        # keeps each count's CPU time comparable with the send rows'.
                        records = args.records * (5 if api == "batch" else 1)
                        got = _one(broker, transport, api, records, n)
                        rows.setdefault((transport, api, side), []).append(got)
                        print(f"round {r + 1} {transport} {api} acl {side}: "
                              f"{got['cpu'] * 1e6:.3f} us CPU/msg", flush=True)
    finally:
        off.stop()
        on.stop()
        off.cleanup()
        on.cleanup()
    summary = []
    print()
    print("| transport | api | sup CPU us/msg off | on | on/off (medians) | single rounds on/off |")
    print("|---|---|---|---|---|---|")
    for transport in ("socket", "shm"):
        for api in ("batch", "send"):
            off_r = [x["cpu"] for x in rows[(transport, api, "off")]]
            on_r = [x["cpu"] for x in rows[(transport, api, "on")]]
            ratio = statistics.median(on_r) / statistics.median(off_r)
            singles = sorted(a / b for a, b in zip(on_r, off_r, strict=True))
            summary.append(dict(transport=transport, api=api,
                                off_us=round(statistics.median(off_r) * 1e6, 4),
                                on_us=round(statistics.median(on_r) * 1e6, 4),
                                ratio=round(ratio, 4), single_rounds=[round(x, 3) for x in singles]))
            print(f"| {transport} | {api} | {statistics.median(off_r) * 1e6:.3f} | "
                  f"{statistics.median(on_r) * 1e6:.3f} | {ratio:.3f} | "
                  f"{singles[0]:.3f}-{singles[-1]:.3f} |")
    report = dict(when=time.strftime("%Y-%m-%dT%H:%M:%S%z"), loadavg=os.getloadavg(),
                  records=args.records, rounds=args.rounds, control=args.control, summary=summary,
                  runs={" ".join(k): v for k, v in rows.items()})
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"\nload average {os.getloadavg()[0]:.2f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
