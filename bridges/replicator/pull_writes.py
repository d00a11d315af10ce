"""A down direction's writes to its local topics (pull.py): records pulled from the target
appended chunk by chunk, each acknowledged durable before the next, with the header naming
where each came from (REMOTE_HEADER, docs/FORMAT.md 7.10); an up direction's gap markers counted
as gaps, never written; the lag figures kept up to date.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bridges.replicator.config import LinkConfig
from bridges.replicator.link_status import GapCount, LinkStatus
from bridges.replicator.targets.base import RemoteRecord
from edgebus import Producer
from edgebus.errors import EdgebusError

log = logging.getLogger("edgebus.replicator")

REMOTE_HEADER = "edgebus-remote"
CHUNK_BYTES = 512 * 1024  # one local write: well under a batch's limit, so it is one batch


def record_bytes(r: RemoteRecord) -> int:
    """A record's bytes as lag_bytes counts them: its key, value and headers."""
    return (len(r.key or b"") + len(r.value or b"")
            + sum(len(n) + len(v or b"") for n, v in r.headers))


def lag_bytes_estimate(pulled: list[RemoteRecord], behind: int) -> int:
    """The down directions' lag in bytes: Kafka and NATS say how many records are behind a
    position, never how many bytes (docs/REPLICATION.md, "Bringing topics down"). The records
    pulled and not yet written count exactly; the `behind` records still at the target count
    as the mean size of the pulled ones, which are the ones right before them."""
    if not pulled:
        return 0
    exact = sum(map(record_bytes, pulled))
    return exact + round(behind * exact / len(pulled))


def remote_header(link: str, topic: str, partition: int, offset: int) -> bytes:
    return f"{link}/{topic}/{partition}/{offset}".encode()


class LocalWrites:
    """PullRunner's writes (a mixin: the direction's status, config and holds are its own)."""

    cfg: LinkConfig
    label: str
    status: LinkStatus
    _markers: dict[tuple[str, int], int]

    def _hold(self, tp: tuple[str, int], why: str) -> None:
        raise NotImplementedError

    def _gap_marker(self, rtp: tuple[str, int], ltp: tuple[str, int], r: RemoteRecord) -> None:
        """An up direction's gap marker (docs/FORMAT.md 7.11) comes down as a gap, not as a
        record: the source offsets it names were never shipped, so there is nothing to write;
        counted (status gap_records / expired_records, metrics) and logged once, as the up
        direction reports its own gaps. A marker read again by a later session (it was the
        subject's last message) is not counted again."""
        if r.offset <= self._markers.get(rtp, -1):
            return
        self._markers[rtp] = r.offset
        start, _, rest = r.gap.partition("/")
        end, _, why = rest.partition("/")
        n = int(end) - int(start) if start.isdigit() and end.isdigit() else 0
        text = (f"remote {rtp[0]} message {r.offset}: source offsets {start}..{int(end) - 1 if n else end} "
                f"({n} records) were never shipped there ({why})")
        with self.status.lock:
            g = self.status.gaps.setdefault(ltp, GapCount())
            if why == "max_age":
                g.max_age += n
            else:
                g.retention += n
            g.last = text
        log.warning("link %s: %s-%d: gap marker, not a record: %s", self.label, ltp[0], ltp[1],
                    text)

    def _write(self, producer: Producer, rtp: tuple[str, int], ltp: tuple[str, int],
               recs: list[RemoteRecord], cursors: dict[tuple[str, int], int],
               behind: int | None = None) -> None:
        """Append to the local partition, chunk by chunk, each acknowledged (durable) before
        the next goes: a failure is always at the end of what is there. behind: records the
        target still holds after these (its lag once they are written), if it says."""
        ps = self.status.partitions[ltp]
        fresh = [r for r in recs if r.offset >= cursors[rtp]]
        if fresh:
            ps.head_append_ms = fresh[0].timestamp  # the oldest not brought down, until it is
            if behind is not None:
                # lag_records is this end minus the cursor once these are written: `behind`
                # (for NATS: stream sequences of other subjects in between are not counted).
                ps.source_end = max(ps.source_end, fresh[-1].offset + 1 + behind)
                ps.lag_bytes = lag_bytes_estimate(fresh, behind)
        i = 0
        while i < len(recs):
            futs: list[Any] = []  # FutureRecordMetadata
            size = sent = 0  # sent: record_bytes of this chunk's records
            while i < len(recs) and (not futs or size < CHUNK_BYTES):
                r = recs[i]
                if r.offset < cursors[rtp]:
                    i += 1  # already here (a record the consumer gave again)
                    continue
                if r.gap:
                    self._gap_marker(rtp, ltp, r)  # offsets the up direction never shipped
                    i += 1
                    continue
                hdrs = [*r.headers, (REMOTE_HEADER, remote_header(self.cfg.name, *rtp, r.offset))]
                futs.append(producer.send(ltp[0], r.value, r.key, hdrs, partition=ltp[1],
                                          timestamp_ms=r.timestamp))
                size += len(r.value or b"") + len(r.key or b"") + 64
                sent += record_bytes(r)
                last, last_ts = r.offset, r.timestamp
                i += 1
            if not futs:
                continue
            producer.flush(2 * self.cfg.heartbeat_s + 30)
            errors = [f.exception for f in futs]
            if any(errors):
                first = next(k for k, e in enumerate(errors) if e)
                if any(e is None for e in errors[first:]):
                    self._hold(ltp, f"a local write failed ({errors[first]}) but later ones "
                               "landed: a gap in the local topic")
                err = errors[first]
                assert err is not None
                raise err if isinstance(err, EdgebusError) else EdgebusError(str(err))
            ps.shipped_records += len(futs)
            ps.shipped_bytes += size
            if ps.lag_bytes >= 0:
                ps.lag_bytes = max(0, ps.lag_bytes - sent)
            cursors[rtp] = ps.cursor = last + 1
            ps.head_append_ms = last_ts  # what follows came no earlier
            ps.source_end = max(ps.source_end, ps.cursor)
            if ps.cursor >= ps.source_end:
                ps.caught_up_at, ps.head_append_ms = time.time(), -1
