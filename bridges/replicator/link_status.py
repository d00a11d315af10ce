"""What a link direction shows of itself: its state, and per partition the cursor, the lag and
what moved (status `/status`, metrics; link.py up, pull.py and peer_pull.py down). Written by the
direction's thread, read by the status endpoint's under `LinkStatus.lock`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bridges.replicator.rate import Rate

if TYPE_CHECKING:
    from bridges.replicator.pull_wildcards import Refusals, Wildcards


@dataclass
class PartitionState:
    cursor: int  # the target's log end: the next offset it expects
    shipped_records: int = 0  # offsets the target's log end moved by in this session
    shipped_bytes: int = 0
    source_end: int = -1  # the source's log end at the last read
    caught_up_at: float = field(default_factory=time.time)  # when the cursor last met source_end
    # Every record not yet shipped was appended at or after this (ms; -1: unknown, then
    # caught_up_at is the bound): the append time of the batch at the cursor from the last read
    # there, or of the last batch shipped. lag_seconds is the age it gives (issue 11 item 5).
    head_append_ms: int = -1
    # Bytes of log from the cursor to the source's end at the last read, less what shipped
    # since (REPLICA_FETCH v1's bytes_to_end; -1: unknown, the source predates it).
    lag_bytes: int = -1
    duplicates: int = 0
    error: str = ""  # why this partition is held (a gap, a recreated source); "" when flowing
    appends: int = 0  # appends sent this session (batching: fewer, larger ones with linger)

    def landed(self, start: int, end: int, nbytes: int, duplicates: int) -> None:
        """One append landed at the target: the cursor moved from `start` to `end`, with
        `nbytes` of batches of which `duplicates` records the target already had (every
        direction counts its appends so: link.py, inflight.py, peer_pull.py)."""
        self.shipped_records += end - start
        self.shipped_bytes += nbytes
        if self.lag_bytes >= 0:
            self.lag_bytes = max(0, self.lag_bytes - nbytes)
        self.appends += 1
        self.duplicates += duplicates
        self.cursor = end

    def landed_from_read(self, end: int, read_next: int, last_ms: int) -> None:
        """After landed(), for an append of a read that ended at `read_next` whose last batch
        was appended at `last_ms`: what follows `end` came no earlier; at the source's end, the
        partition is caught up (link.py up, peer_pull.py down)."""
        if end >= read_next:
            self.head_append_ms = last_ms
        if end >= self.source_end:
            self.caught_up_at, self.head_append_ms = time.time(), -1


@dataclass
class GapCount:
    """Offsets of one partition never shipped, since the replicator started (a gap record at
    the target names each range; these counters are the metric and the status line)."""

    retention: int = 0  # deleted by the source's retention before they were shipped
    max_age: int = 0  # older than the topic's max_age: not shipped
    last: str = ""  # the last gap, as the target recorded it


@dataclass
class LinkStatus:
    state: str = "starting"  # starting | up | down
    last_error: str = ""
    sessions: int = 0
    partitions: dict[tuple[str, int], PartitionState] = field(default_factory=dict)
    # Bytes of batches read from the source (for a peer down direction: the peer) in this
    # session: above shipped_bytes by what was read again (a dropped read-ahead, a retry).
    read_bytes: int = 0
    in_flight_max: int = 0  # the most shipments in flight at once since the start (inflight.py)
    gaps: dict[tuple[str, int], GapCount] = field(default_factory=dict)  # kept across sessions
    rates: dict[tuple[str, int], Rate] = field(default_factory=dict)  # sample(), about once a second
    # A NATS down direction's subjects refused by its wildcard rules (pull_wildcards.py).
    refusals: Refusals | None = None
    # Its wildcard rules: status lists a bounded number of each one's partitions, and a
    # summary per rule (pull_wildcards.Wildcards.summarize).
    wildcards: Wildcards | None = None
    # Guards `partitions` against a reader on another thread (the status endpoint).
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def sample(self) -> None:
        """Feed each partition's running totals to its Rate (main.py, about once a second)."""
        now = time.monotonic()
        with self.lock:
            for tp, ps in self.partitions.items():
                self.rates.setdefault(tp, Rate()).sample(now, ps.shipped_records, ps.shipped_bytes)

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        with self.lock:
            parts = list(self.partitions.items())
            gaps = dict(self.gaps)
            rates = {tp: r.per_s() for tp, r in self.rates.items()}
        out = []
        for (topic, p), ps in sorted(parts):
            lag = max(0, ps.source_end - ps.cursor) if ps.source_end >= 0 and ps.cursor >= 0 else None
            g = gaps.get((topic, p), GapCount())
            out.append({"topic": topic, "partition": p, "target_end": ps.cursor,
                        "source_end": ps.source_end, "lag_records": lag,
                        "lag_bytes": (ps.lag_bytes if lag else 0) if ps.lag_bytes >= 0 else None,
                        "lag_seconds": round(max(0.0, now - (
                            ps.head_append_ms / 1000 if ps.head_append_ms >= 0
                            else ps.caught_up_at)), 3) if lag else 0.0,
                        "shipped_records": ps.shipped_records, "shipped_bytes": ps.shipped_bytes,
                        "appends": ps.appends, "already_there": ps.duplicates, "held": ps.error,
                        "gap_records": g.retention, "expired_records": g.max_age,
                        "last_gap": g.last,
                        "rate_records_s": round(rates.get((topic, p), (0.0, 0.0))[0], 1),
                        "rate_bytes_s": round(rates.get((topic, p), (0.0, 0.0))[1])})
        doc = {"state": self.state, "last_error": self.last_error, "sessions": self.sessions,
               "read_bytes": self.read_bytes, "in_flight_max": self.in_flight_max,
               "partitions": out}
        if self.wildcards:
            doc["partitions"], doc["rules"] = self.wildcards.summarize(out)
        if self.refusals is not None and self.refusals.count:
            doc["refused_subjects"], doc["refused_count"] = self.refusals.snapshot()
        return doc
