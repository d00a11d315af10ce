"""The replicator's own CPU seconds per record while its NATS target ships a backlog into an R3
stream (bench.replication_nats's catch-up set-up): CPU time of that one process, which the
machine's load moves far less than records/s (printed too, for what it is worth).

    python bench/nats_cpu_per_record.py RECORDS_PER_SOURCE_BATCH RECORDS
    # before/after in one session: each tree first on the path, alternately
    cd /work/wt-bench && PYTHONPATH=/work/wt-bench .venv/bin/python /path/to/bench/nats_cpu_per_record.py 1 20000

Prints one JSON line and the load average.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.replication_harness import cpu, kill, sync_backlog, write_backlog
from bench.replication_nats import Hub, _count, _flow, _replicator_setup


def main() -> None:
    per_batch, records = int(sys.argv[1]), int(sys.argv[2])
    with tempfile.TemporaryDirectory(prefix="eb-rc-") as d:
        root = Path(d)
        hub = Hub(root)
        src = rep = None
        try:
            src, rep = _replicator_setup(root, hub)
            time.sleep(0.5)
            os.kill(rep.pid, signal.SIGSTOP)  # the backlog is written while it waits
            write_backlog(src.socket, "b", [b"x" * 100] * per_batch, records)
            sync_backlog(src.socket, "b")
            c0 = cpu(rep.pid)
            os.kill(rep.pid, signal.SIGCONT)
            secs, moved = _flow(lambda: _count(hub.cluster.urls[0], "EDGE"), records)
            time.sleep(0.2)
            out = {"per_batch": per_batch, "records": records,
                   "replicator_cpu_us_per_record": round((cpu(rep.pid) - c0) / records * 1e6, 2),
                   "records_per_s": round(moved / secs)}
        finally:
            kill(rep)
            if src is not None:
                src.cleanup()
            hub.close()
    print(json.dumps(out), os.getloadavg()[0])


if __name__ == "__main__":
    main()
