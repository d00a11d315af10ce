"""SD-card wear per acks level: what 1,000 records cost the storage device.

For each acks level (none, written, durable) one producer sends N records of 100 B at a steady
rate to a fresh supervisor, then waits for the data to reach the disk (the supervisor's flush
interval). Reported per 1,000 records: bytes the supervisor caused to be written to the device
(`write_bytes` of /proc/PID/io, which counts writeback, not page-cache copies) against the
payload bytes, and fsyncs (the group committer's rounds, from the status document); and fsyncs
per second at that rate. Both the library's defaults (linger) and linger_ms=0 are run: the
linger is what lets the group committer cover many records with one fsync.

    python -m bench.wear [--records N] [--rate R]    (also run by `python -m bench`)

Writes bench/results/wear.json and prints a table. The data directory is on the disk under
/var/tmp (a tmpfs would write nothing to a device).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgebus import Admin, Producer
from edgebus.testing import EmbeddedBroker

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = 100


def _io_write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/io has no write_bytes")


def _fsyncs(sock: str) -> int:
    with Admin(socket=sock) as a:
        return int(a.status()["fsync_count"])


def one(acks: str, linger_ms: int | None, records: int, rate: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="edgebus-wear-", dir="/var/tmp"))
    b = EmbeddedBroker(root, log_level="WARNING").start()  # the default flush interval (1 s)
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic("teapot", 1)
        time.sleep(0.5)  # the topic's own files reach the disk before counting starts
        assert b.pid is not None
        w0, f0, t0 = _io_write_bytes(b.pid), _fsyncs(b.socket), time.monotonic()
        kw: dict[str, Any] = {"acks": acks}
        if linger_ms is not None:
            kw["linger_ms"] = linger_ms
        value = b"t" * SIZE
        with Producer(socket=b.socket, **kw) as p:
            for i in range(records):
                p.send("teapot", value, key=b"kettle-%d" % (i % 4))
                ahead = t0 + (i + 1) / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            p.flush()
        elapsed = time.monotonic() - t0
        time.sleep(2.5)  # past the flush interval: written-level data has gone to the device
        w1, f1 = _io_write_bytes(b.pid), _fsyncs(b.socket)
    finally:
        b.stop()
        b.cleanup()
    per_k = 1000 / records
    return {"acks": acks, "linger_ms": "default" if linger_ms is None else linger_ms,
            "records": records, "rate": rate, "seconds": round(elapsed, 2),
            "device_bytes_per_1k_records": round((w1 - w0) * per_k),
            "payload_bytes_per_1k_records": SIZE * 1000,
            "write_amplification": round((w1 - w0) / (SIZE * records), 2),
            "fsyncs_per_1k_records": round((f1 - f0) * per_k, 2),
            "fsyncs_per_s": round((f1 - f0) / elapsed, 1)}


def run(records: int = 20_000, rate: int = 5_000) -> list[dict[str, Any]]:
    rows = []
    for acks in ("none", "written", "durable"):
        for linger in (None, 0):
            rows.append(one(acks, linger, records, rate))
            print(f"  wear {acks:8} linger={rows[-1]['linger_ms']!s:8} "
                  f"{rows[-1]['device_bytes_per_1k_records']:>9,} B/1k records, "
                  f"{rows[-1]['fsyncs_per_1k_records']:>7} fsyncs/1k, "
                  f"{rows[-1]['fsyncs_per_s']:>7} fsyncs/s", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| acks | linger_ms | device bytes / 1k records | write amplification | fsyncs / 1k records | fsyncs/s |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['acks']} | {r['linger_ms']} | {r['device_bytes_per_1k_records']:,} | "
                   f"{r['write_amplification']} | {r['fsyncs_per_1k_records']} | {r['fsyncs_per_s']} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.wear", description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--rate", type=int, default=5_000, help="records/s the producer is paced at")
    args = ap.parse_args(argv)
    rows = run(args.records, args.rate)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "wear.json").write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                   "size": SIZE, "rows": rows}, indent=2) + "\n")
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
