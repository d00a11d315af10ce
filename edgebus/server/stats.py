"""Counters the supervisor keeps for `edgebus status` and the metrics endpoint.

Plain integers updated on the loop thread, so that keeping them costs almost nothing when nobody
looks; the metrics endpoint (edgebus/server/metrics.py) writes them in Prometheus's text format
itself (server/promtext.py), without importing prometheus-client.
Records out are counted per batch from the batch headers of each fetch response sent, never by
decoding records.
"""

from __future__ import annotations

import bisect
from typing import Any

from edgebus import format as F

# Upper bounds (seconds) of the fsync latency buckets: 0.1 ms on a fast SSD to seconds on a worn
# SD card.
_U32 = F.U32
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                 0.5, 1.0, 2.5, 5.0, 10.0)


class Stats:
    def __init__(self) -> None:
        self.records_in = 0  # appended by producers (handlers/data.py produce_fields)
        self.bytes_in = 0
        self.records_out = 0
        self.batches_out = 0
        self.bytes_out = 0
        # Per topic: [records, bytes], added once per batch from its header (never per record).
        # A topic's entry stays after it is deleted: Prometheus counters never go back.
        self.topic_in: dict[str, list[int]] = {}
        self.topic_out: dict[str, list[int]] = {}
        # fsync rounds of the group committer (one round may cover several partitions).
        self.fsync_buckets = [0] * (len(FSYNC_BUCKETS) + 1)  # the last one is +Inf
        self.fsync_count = 0
        self.fsync_sum = 0.0
        self._seen_syncs = 0
        self._seen_seconds = 0.0
        # Refusals by the limits (edgebus/config.py `limits:`): connections by the limit that
        # refused them, fetches refused because queued answers reached the output budget.
        self.refused_connections: dict[str, int] = {"max_connections": 0,
                                                    "max_connections_per_uid": 0}
        self.refused_fetches_output_budget = 0

    def refused_connection(self, limit: str) -> None:
        self.refused_connections[limit] = self.refused_connections.get(limit, 0) + 1

    def appended(self, topic: str, records: int, nbytes: int) -> None:
        """One batch of `records` records and `nbytes` bytes was appended to `topic`."""
        self.records_in += records
        self.bytes_in += nbytes
        t = self.topic_in.get(topic)
        if t is None:
            t = self.topic_in[topic] = [0, 0]
        t[0] += records
        t[1] += nbytes

    def fetch_sent(self, resp: Any) -> None:
        """A FetchResponse went out: count its whole batches, records and bytes."""
        for part in resp.partitions:
            data = part.records
            n = len(data)
            if not n:
                continue
            batches, records = count_batches(data)
            self._sent(part.topic, batches, records, n)

    def batch_sent(self, topic: str, batch: Any) -> None:
        """One whole batch went out (a parked fetch answered from the batch just appended)."""
        # _sent's work, without the call (once per answer on the latency path)
        records = _U32.unpack_from(batch, F.BATCH_RECORD_COUNT)[0]
        n = len(batch)
        self.bytes_out += n
        self.batches_out += 1
        self.records_out += records
        t = self.topic_out.get(topic)
        if t is None:
            t = self.topic_out[topic] = [0, 0]
        t[0] += records
        t[1] += n

    def bytes_sent(self, topic: str, data: bytes | memoryview) -> None:
        """Whole stored batches went out in another protocol's encoding (the Kafka listener)."""
        batches, records = count_batches(data)
        self._sent(topic, batches, records, len(data))

    def _sent(self, topic: str, batches: int, records: int, nbytes: int) -> None:
        self.bytes_out += nbytes
        self.batches_out += batches
        self.records_out += records
        t = self.topic_out.get(topic)
        if t is None:
            t = self.topic_out[topic] = [0, 0]
        t[0] += records
        t[1] += nbytes

    def after_drain(self, committer: Any) -> None:
        """Observe the fsync rounds the committer finished since the last call. Only one round
        runs at a time, so a drain finishes at most one and the difference is its duration."""
        syncs, seconds = committer.syncs, committer.sync_seconds
        done = syncs - self._seen_syncs
        if done <= 0:
            return
        each = (seconds - self._seen_seconds) / done
        self._seen_syncs, self._seen_seconds = syncs, seconds
        for _ in range(done):
            self.fsync_buckets[bisect.bisect_left(FSYNC_BUCKETS, each)] += 1
        self.fsync_count += done
        self.fsync_sum += each * done

    def fsync_cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, cumulative count) pairs as Prometheus histograms want them."""
        out, total = [], 0
        for bound, n in zip((*map(str, FSYNC_BUCKETS), "+Inf"), self.fsync_buckets, strict=True):
            total += n
            out.append((bound, total))
        return out


def count_batches(data: bytes | memoryview) -> tuple[int, int]:
    """(batches, records) in a run of whole batches, read from their headers only."""
    mv = memoryview(data)
    pos, n = 0, len(mv)
    batches = records = 0
    while pos + F.BATCH_HEADER_SIZE <= n:
        length = _U32.unpack_from(mv, pos + F.BATCH_LENGTH)[0]
        if length < F.BATCH_HEADER_SIZE:
            break  # not a batch boundary: never loop on garbage
        batches += 1
        records += _U32.unpack_from(mv, pos + F.BATCH_RECORD_COUNT)[0]
        pos += length
    return batches, records
