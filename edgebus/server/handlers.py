"""Request handlers: the supervisor's behaviour per API, independent of the event loop's I/O.

A handler returns a response body, raises an EdgebusError (sent as an error response), or returns
DEFERRED when the answer comes later (durable acks, parked fetches).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgebus import batch as B
from edgebus import format as F
from edgebus.errors import (
    EdgebusError,
    InvalidRequestError,
    InvalidTopicError,
    ShuttingDownError,
)
from edgebus.fastpath.fetch import encode_fetched_one
from edgebus.fastpath.produce import encode_produce_response
from edgebus.log.topic_config import TopicConfig, validate_topic_name
from edgebus.protocol import messages as M
from edgebus.protocol import registry as AR
from edgebus.version import __version__

if TYPE_CHECKING:
    from edgebus.server.broker import Broker

log = logging.getLogger("edgebus.handlers")

# A consumer needs one parked fetch at a time; more from one connection only cost every append a
# read per waiter (a client pipelining thousands could slow every producer), so extra ones are
# answered at once instead of parked.
MAX_PARKED_FETCHES_PER_CONNECTION = 8

DEFERRED = object()
NO_RESPONSE = object()


@dataclass(eq=False)
class DurableWaiter:
    conn: Any
    correlation_id: int
    partition: Any
    response: M.Message  # sent once durable: a ProduceResponse, an OffsetCommitResponse, ...


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Handlers:
    def __init__(self, broker: Broker) -> None:
        self.b = broker
        self.logs = broker.logs
        self.table = {
            M.Api.API_VERSIONS: self.api_versions,
            M.Api.METADATA: self.metadata,
            M.Api.CREATE_TOPIC: self.create_topic,
            M.Api.DELETE_TOPIC: self.delete_topic,
            M.Api.PRODUCE: self.produce,
            M.Api.FETCH: self.fetch,
            M.Api.LIST_OFFSETS: self.list_offsets,
            M.Api.STATUS: self.status,
        }

    # --- control plane ---------------------------------------------------------------------------
    def api_versions(self, conn: Any, corr: int, req: M.ApiVersionsRequest) -> M.ApiVersionsResponse:
        return M.ApiVersionsResponse(
            __version__,
            [M.ApiVersionRange(k, lo, hi) for k, (lo, hi) in sorted(AR.VERSIONS.items())],
        )

    def metadata(self, conn: Any, corr: int, req: M.MetadataRequest) -> M.MetadataResponse:
        # Internal topics ("__consumer_offsets") are listed only when asked for by name.
        names = req.topics or sorted(n for n in self.logs.topics() if not n.startswith("__"))
        out = []
        topics = self.logs.topics()
        for name in names:
            cfg = topics.get(name)
            if cfg is None:
                out.append(M.TopicMetadata(name, 5, f"unknown topic {name!r}", [], []))
                continue
            parts = [
                M.PartitionMetadata(p.partition, p.log_start_offset, p.log_end_offset,
                                    p.size_bytes, p.segment_count)
                for p in self.logs.partitions(name)
            ]
            configs = [M.ConfigEntry(k, str(v)) for k, v in sorted(cfg.to_entries().items())]
            out.append(M.TopicMetadata(name, 0, "", configs, parts))
        return M.MetadataResponse(out)

    def create_topic(self, conn: Any, corr: int, req: M.CreateTopicRequest) -> M.Empty:
        validate_topic_name(req.name)
        entries: dict[str, Any] = {c.name: c.value for c in req.configs}
        if req.partitions > 0:  # 0: the supervisor's topic_defaults.partitions
            entries["partitions"] = req.partitions
        elif req.partitions < 0:
            raise InvalidRequestError(f"partitions must be >= 1, got {req.partitions}")
        cfg = TopicConfig.from_entries(entries, base=self.b.topic_defaults)
        self.logs.create_topic(req.name, cfg)
        self.b.groups.topic_created(req.name)  # consumer groups: subscribers rebalance
        log.info("created topic %s with %d partitions (by %r)", req.name, cfg.partitions, conn)
        return M.Empty()

    def delete_topic(self, conn: Any, corr: int, req: M.DeleteTopicRequest) -> M.Empty:
        validate_topic_name(req.name)  # internal topics ("__...") cannot be deleted by clients
        # Parked fetches on the topic are answered first so no one holds its partitions.
        for w in self.b.waiters.all():
            if any(t == req.name for t, _ in w.keys):
                self.b.complete_fetch(w)
        self.logs.delete_topic(req.name)
        self.b.groups.topic_deleted(req.name)  # consumer groups: forget its committed offsets
        log.info("deleted topic %s (by %r)", req.name, conn)
        return M.Empty()

    def status(self, conn: Any, corr: int, req: M.Empty) -> M.StatusResponse:
        import json

        from edgebus.server.status import collect  # disk, clients, groups and lag, counters

        return M.StatusResponse(json.dumps(collect(self.b)).encode())

    # --- data plane ------------------------------------------------------------------------------
    def produce(self, conn: Any, corr: int, req: M.ProduceRequest) -> Any:
        return self.produce_fields(conn, corr, req.topic, req.partition, req.acks, req.batch, False)

    def produce_fields(self, conn: Any, corr: int, topic: str, partition: int, acks: int, batch: Any,
                       encoded: bool = True) -> Any:
        """PRODUCE from the request's fields (the broker's fast path decodes them without the
        dataclass). With `encoded`, an acks=written answer is returned as its whole response
        frame (bytes, queued as it is) instead of a ProduceResponse."""
        b = self.b
        if b.stopping:
            raise ShuttingDownError("the supervisor is shutting down")
        if acks not in (M.ACKS_NONE, M.ACKS_WRITTEN, M.ACKS_DURABLE):
            raise InvalidRequestError(f"acks must be 0, 1 or 2, got {acks}")
        if topic.startswith("__"):  # only the supervisor writes its internal topics
            raise InvalidTopicError(f"{topic!r} is an internal topic")
        p = self.logs.partition(topic, partition)
        if batch is None:  # BYTES may be null on the wire; a PRODUCE without a batch is meaningless
            raise InvalidRequestError("PRODUCE carries a null batch (length -1); send one whole record batch")
        info = B.validate_batch(batch, max_bytes=p.config.max_message_bytes)
        base, atime = b.disk.append(p, batch, info, now_ms())  # watermarks (server/disk.py)
        b.records_in += info.record_count
        b.bytes_in += info.length
        b.on_append(p, batch, base, atime)
        if acks == M.ACKS_WRITTEN and encoded:
            try:
                return encode_produce_response(corr, topic, partition, base, atime, p.log_start_offset)
            except Exception:  # unusual values: the generic codec below gives its own result or error
                pass
        if acks == M.ACKS_NONE:
            return NO_RESPONSE
        resp = M.ProduceResponse(topic, partition, base, atime, p.log_start_offset)
        if acks == M.ACKS_DURABLE:
            b.committer.add_waiter(p, DurableWaiter(conn, corr, p, resp))
            return DEFERRED
        return resp

    def fetch(self, conn: Any, corr: int, req: M.FetchRequest) -> Any:
        if req.max_bytes <= 0 or any(fp.max_bytes <= 0 for fp in req.partitions):
            raise InvalidRequestError("fetch max_bytes must be positive")
        wait = min(req.max_wait_ms, self.b.max_fetch_wait_ms)
        parkable = (wait > 0 and not self.b.stopping
                    and conn.parked < MAX_PARKED_FETCHES_PER_CONNECTION)
        if parkable and req.min_bytes > 0 and self._all_at_end(req):
            # What read_fetch would find: no data and no error, so total 0 < min_bytes: park.
            self.b.park_fetch(conn, corr, req, wait)
            return DEFERRED
        resp, total = self.read_fetch(req)
        errors = any(p.error_code for p in resp.partitions)
        if total >= req.min_bytes or errors or not parkable:
            return resp
        self.b.park_fetch(conn, corr, req, wait)
        return DEFERRED

    def _all_at_end(self, req: M.FetchRequest) -> bool:
        """Whether every partition of the fetch exists and is asked for at its log end (the fetch a
        caught-up consumer parks), checked without building a response."""
        try:
            for fp in req.partitions:
                if not self.logs.partition(fp.topic, fp.partition).at_end(fp.offset):
                    return False
        except EdgebusError:
            return False
        return True

    def fetch_appended(self, corr: int, req: M.FetchRequest, p: Any, batch: Any, base: int,
                       append_time: int) -> bytes | None:
        """The response frame that answers the parked fetch `req` right after `batch` (stamped with
        `base`, `append_time`) was appended to `p`, built from the batch instead of re-reading it;
        None when read_fetch must decide. Equal to read_fetch's answer when used: a fetch of
        one partition at the batch's base offset reads the batch holding that offset and, as the
        first partition of its response, takes it whole whatever the byte limits (at_least_one),
        and nothing follows it in the log. tests/test_fastpath_server.py compares the two."""
        parts = req.partitions
        if len(parts) != 1:
            return None
        fp = parts[0]
        if (fp.offset != base or fp.partition != p.partition or fp.topic != p.topic
                or len(batch) < req.min_bytes or req.max_bytes <= 0 or fp.max_bytes <= 0
                or p.log_end_offset <= base):
            return None
        if F.BATCH_STAMP.unpack_from(batch, 0) != (base, append_time):
            return None  # not stamped in place (the log copied a read-only buffer): read it
        try:
            return encode_fetched_one(corr, fp.topic, fp.partition, p.log_end_offset,
                                      p.log_start_offset, batch)
        except Exception:  # unusual values: the read-based path gives its own result or error
            return None

    def read_fetch(self, req: M.FetchRequest) -> tuple[M.FetchResponse, int]:
        # Bounded whatever the client asks, so the response fits the client's frame limit; only
        # the first batch of the response may exceed what is left (a huge batch still progresses).
        remaining = min(req.max_bytes, F.MAX_FETCH_RESPONSE_BYTES)
        out = []
        total = 0
        for fp in req.partitions:
            try:
                p = self.logs.partition(fp.topic, fp.partition)
                data = (p.read(fp.offset, min(fp.max_bytes, remaining), at_least_one=total == 0)
                        if remaining > 0 else b"")
                total += len(data)
                remaining -= len(data)
                out.append(M.FetchedPartition(fp.topic, fp.partition, 0, "", p.log_end_offset,
                                              p.log_start_offset, data))
            except EdgebusError as e:
                hw = ls = -1
                try:
                    p = self.logs.partition(fp.topic, fp.partition)
                    hw, ls = p.log_end_offset, p.log_start_offset
                except EdgebusError:
                    pass
                out.append(M.FetchedPartition(fp.topic, fp.partition, e.code, str(e), hw, ls, b""))
        return M.FetchResponse(out), total

    def list_offsets(self, conn: Any, corr: int, req: M.ListOffsetsRequest) -> M.ListOffsetsResponse:
        out = []
        for lp in req.partitions:
            try:
                p = self.logs.partition(lp.topic, lp.partition)
                if lp.timestamp == M.LATEST:
                    off, ts = p.log_end_offset, -1
                elif lp.timestamp == M.EARLIEST:
                    off, ts = p.log_start_offset, -1
                elif lp.timestamp < 0:
                    raise InvalidRequestError(f"timestamp {lp.timestamp} is not valid")
                else:
                    found = p.offset_for_timestamp(lp.timestamp)
                    off, ts = found if found is not None else (-1, -1)
                out.append(M.ListedOffset(lp.topic, lp.partition, 0, "", off, ts))
            except EdgebusError as e:
                out.append(M.ListedOffset(lp.topic, lp.partition, e.code, str(e), -1, -1))
        return M.ListOffsetsResponse(out)
