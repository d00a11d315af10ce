"""The NATS target's encoding of one read into atomic batches, in CPU time per record: the
replicator-side cost that issue 11's steady-rate figure blamed (per-record encoding in Python).

    python bench/nats_encode.py [--records 2000] [--repeat 7]
    # before/after in one session: run it with each tree first on the path, alternately
    PYTHONPATH=/work/wt-bench  /work/wt-bench/.venv/bin/python bench/nats_encode.py
    PYTHONPATH=.               .venv/bin/python bench/nats_encode.py

It builds the same read as the benchmark's steady rate (one 100-byte record per source batch,
the producer's linger 0) and one of catch-up (1000-record batches), and runs the target's own
code on it with no server: decoding the source batches, encoding every message, and the frames
sent before the commit, i.e. everything `ship` does but the network. Whichever tree is first on
sys.path is measured (the code before nats_frames.py, or after). CPU time (process_time), best
of `repeat`: the machine's load moves it far less than wall time. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from bridges.replicator.config import _link
from bridges.replicator.targets import nats as N
from edgebus import batch as B
from edgebus.client.replica import PartitionRead


def _read(records: int, per_batch: int) -> PartitionRead:
    parts, off = [], 0
    while off < records:
        n = min(per_batch, records - off)
        recs = [B.encode_record(i, None, b"x" * 100, []) for i in range(n)]
        parts.append(bytes(B.build_batch(recs, off, 1_700_000_000_000)))
        off += n
    return PartitionRead(b"".join(parts), 0, off, 0, off, None, "ab" * 16, off)


def _target() -> Any:
    cfg = _link({"name": "bench", "target": "nats", "servers": ["nats://127.0.0.1:4222"],
                 "stream": "EDGE", "topics": ["b"]}, 0, None, "bench-src")
    t = N.NatsTarget(cfg, "bench-src")
    t._last[("b", 0)] = (0, 0)
    return t


def encode_all(t: Any, read: PartitionRead) -> int:
    """Every batch's bytes as `ship` builds them (both versions of the code); their size."""
    subject, inc, n = "edgebus.bench-src.b.0", "ab" * 16, 0
    F: Any = None  # the module, after; before: per-record dicts and frames
    with contextlib.suppress(ImportError):
        from bridges.replicator.targets import nats_frames as F
    if F is not None:
        for group in t._groups("b", 0, read, 0, [0]):
            b = F.encode_batch(subject, "bench-src/b/0/", group, uuid.uuid4().hex, inc)
            head, rest = b.frames(7)
            n += len(head) + len(rest) + len(b.last_payload)
        return n
    for group in t._groups("b", 0, read, 0, [0]):
        frames = t._frames(subject, group, inc)
        group[0][1]["Nats-Expected-Last-Subject-Sequence"] = "7"
        head = getattr(N, "_hpub")(subject, *group[0]) if len(group) > 1 else b""  # noqa: B009
        n += len(head) + len(frames) + len(group[-1][0])
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    t = _target()
    out: dict[str, Any] = {"tree": str(Path(N.__file__).parents[3]), "load": os.getloadavg()[0]}
    with contextlib.suppress(OSError):
        out["commit"] = subprocess.run(["git", "-C", out["tree"], "rev-parse", "--short", "HEAD"],
                                       capture_output=True, text=True).stdout.strip()
    for name, per_batch in (("steady_1_record_batches", 1), ("catch_up_1000_record_batches", 1000)):
        read = _read(args.records, per_batch)
        best = float("inf")
        for _ in range(args.repeat):
            c0 = time.process_time()
            encode_all(t, read)
            best = min(best, time.process_time() - c0)
        out[f"{name}_us_per_record"] = round(best / args.records * 1e6, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
