"""`edgebus replicate --config FILE`: run every link until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from bridges.replicator.config import ReplicatorConfig
from bridges.replicator.link import LinkRunner
from bridges.replicator.peer_pull import PeerPullRunner
from bridges.replicator.pull import PullRunner

log = logging.getLogger("edgebus.replicator")

SUMMARY_EVERY_S = 60.0  # one status line per link at this interval (journald keeps it)


def summary(r: LinkRunner | PullRunner) -> str:
    parts = r.status.partitions
    held = sum(1 for p in parts.values() if p.error)
    shipped = sum(p.shipped_records for p in parts.values())
    dups = sum(p.duplicates for p in parts.values())
    gaps = sum(g.retention for g in r.status.gaps.values())
    expired = sum(g.max_age for g in r.status.gaps.values())
    return (f"link {r.label}: {r.status.state}, {len(parts)} partition(s), {held} held, "
            f"{shipped} record(s) shipped, {dups} batch(es) already there"
            + (f", GAPS: {gaps} record(s) lost to retention, {expired} past max_age"
               if gaps or expired else "")
            + (f", last error: {r.status.last_error}" if r.status.last_error else ""))


def status(cfg: ReplicatorConfig, runners: list[LinkRunner | PullRunner]) -> dict[str, Any]:
    """The /status document: every link with its partitions (bridges/replicator/link.py); a
    link's down direction (pull.py) as "<name>:down", its partitions named by local topic."""
    return {"node": cfg.node, "links": {
        r.label: {"target": r.cfg.target, "address": r.cfg.address,
                  "direction": "down" if isinstance(r, PullRunner) else "up",
                  **r.status.snapshot()} for r in runners}}


def run(cfg: ReplicatorConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runners: list[LinkRunner | PullRunner] = [
        LinkRunner(link, cfg.node, cfg.socket, stop) for link in cfg.links
        if any(r.direction == "up" for r in link.topics)]
    runners += [(PeerPullRunner if link.target == "peer" else PullRunner)(
        link, cfg.node, cfg.socket, stop) for link in cfg.links if link.pulls]
    endpoint = None
    if cfg.metrics_listen:
        from bridges.endpoint import Endpoint
        from bridges.replicator.metrics import ReplicatorCollector

        endpoint = Endpoint(cfg.metrics_listen, ReplicatorCollector(runners),
                            lambda: status(cfg, runners), "replicator")
        endpoint.start()
    for r in runners:
        r.thread.start()
    log.info("replicator of node %s: %d link(s)", cfg.node, len(runners))
    next_summary = time.monotonic() + SUMMARY_EVERY_S
    while not stop.wait(1.0):
        for r in runners:
            r.status.sample()  # the rates in /status
        if time.monotonic() >= next_summary:
            for r in runners:
                log.info("%s", summary(r))
            next_summary = time.monotonic() + SUMMARY_EVERY_S
    for r in runners:
        r.thread.join(timeout=10)
    if endpoint is not None:
        endpoint.stop()
    log.info("replicator stopped")
    return 0
